"""``pymaap.logging_backend``: its multiprocessing logging calls.

calltape's timer writes each process's lines itself (O_APPEND, rotation under a
lock file), so there is no writer process to start: ``init_multiprocessing_logging``
only makes sure the log folder exists and ``shutdown_multiprocessing_logging``
flushes the tape and the log handlers of this process.
"""

from __future__ import annotations

import json
import logging
import os


class JSONFormatter(logging.Formatter):
    """PyMAAP's JSON line: timestamp, level, message, function, uuid."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"timestamp": self.formatTime(record), "level": record.levelname,
                           "message": record.getMessage(),
                           "function": getattr(record, "function_name", "N/A"),
                           "uuid": getattr(record, "uuid", "N/A")})


def init_multiprocessing_logging(log_file: str = "logs/timing.log") -> None:
    """Create the folder of ``log_file``."""
    os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)


def shutdown_multiprocessing_logging() -> None:
    """Write out what this process recorded and logged."""
    from ... import _native, _timer

    _native.flush()
    for log in list(_timer._loggers.values()):
        for h in log.handlers:
            h.flush()
