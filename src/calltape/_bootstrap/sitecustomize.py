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

# chain to the sitecustomize this one hides, if any.  While this module is
# being imported the import system expects to find it in sys.modules when
# it is done: put it back whenever no other sitecustomize took its place.
_saved = sys.path[:]
_self = sys.modules.pop("sitecustomize", None)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
try:
    import sitecustomize  # noqa: F401
except ImportError as _exc:
    if _exc.name != "sitecustomize":
        raise  # the other sitecustomize failed: site.py reports it, as without calltape
finally:
    sys.path[:] = _saved
    if "sitecustomize" not in sys.modules and _self is not None:
        sys.modules["sitecustomize"] = _self
