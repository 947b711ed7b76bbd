"""Runs a script with empty sys.monitoring callbacks: the floor under ``calltape run``.

``python bench/_floor.py SCRIPT ARG...`` registers ``calltape._native.nop`` (a
C function that does nothing) for the events ``calltape run`` listens to, on
the same tool id, and runs the script as ``__main__``. What this adds to plain
python is what CPython's own dispatch of those events costs, before any
recording: ``bench run`` shows it as its "floor" row.
"""

from __future__ import annotations

import runpy
import sys

from calltape import _native


def main() -> None:
    """Sets the empty callbacks, then runs sys.argv[1] with the rest as its argv."""
    mon = sys.monitoring
    names = ("PY_START", "PY_RESUME", "PY_RETURN", "PY_YIELD", "PY_UNWIND", "PY_THROW")
    mon.use_tool_id(mon.PROFILER_ID, "calltape-floor")
    mask = 0
    for name in names:
        event = getattr(mon.events, name)
        mon.register_callback(mon.PROFILER_ID, event, _native.nop)
        mask |= event
    mon.set_events(mon.PROFILER_ID, mask)
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
