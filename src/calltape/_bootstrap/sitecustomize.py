"""Put on PYTHONPATH by ``calltape run``: Python child processes of the
recorded program (multiprocessing spawn and forkserver workers, subprocesses)
start recording onto the same tape as their own sessions.  Any other
``sitecustomize`` on the path still runs."""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if os.environ.get("CALLTAPE_MONITOR"):
    try:
        from calltape._monitor import _start_from_environment
    except ImportError:  # another Python, without calltape: it runs unrecorded
        _start_from_environment = None
    if _start_from_environment is not None:
        try:
            _start_from_environment()
        except Exception as exc:  # noqa: BLE001 - recording never breaks the program
            print(f"calltape: not recording this process: {exc}", file=sys.stderr)

# chain to the sitecustomize this one hides, if any
_saved = sys.path[:]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
del sys.modules["sitecustomize"]
try:
    import sitecustomize  # noqa: F401
except ImportError:
    pass
finally:
    sys.path[:] = _saved
