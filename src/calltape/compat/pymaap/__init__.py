"""PyMAAP's API on calltape: change ``from pymaap import ...`` (or ``from monitoring
import ...``) to ``from calltape.compat.pymaap import ...``.

The facade records onto ``logs/calltape.db`` (the tape of the results command)
unless calltape was configured otherwise, and writes PyMAAP's files: ``logs/timing.log``,
``logs/timing_results.csv`` (or ``.parquet``), ``logs/error.log``.
"""

from __future__ import annotations

from .logging_setup import init_general_logger
from .monitoring import ErrorCatcher, Timer, get_metrics_end, get_metrics_start, sanitizer

__all__ = ["ErrorCatcher", "Timer", "get_metrics_end", "get_metrics_start",
           "init_general_logger", "sanitizer"]
