"""``python -m calltape``: the same as the ``calltape`` command."""

import sys

from .cli import main

sys.exit(main())
