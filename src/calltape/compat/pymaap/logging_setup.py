"""``pymaap.logging_setup.init_general_logger``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..._timer import SharedRotatingFileHandler


def init_general_logger(name: str | None = None, log_dir: str = "logs",
                        general_log: str = "general.log",
                        json_log: str | None = "general.json.log",
                        max_bytes: int = 10 * 1024 * 1024, backup_count: int = 5,
                        console_level: int = logging.INFO) -> logging.Logger:
    """A logger with a text file, an optional JSON-lines file (both rotated, safe across
    processes) and a console handler; None configures the root logger as PyMAAP did."""
    logger = logging.getLogger(name) if name else logging.getLogger()
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    logger.handlers.clear()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    text = SharedRotatingFileHandler(os.path.join(log_dir, general_log), maxBytes=max_bytes,
                                     backupCount=backup_count)
    text.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s.%(funcName)s] %(message)s"))
    logger.addHandler(text)
    if json_log:
        from ...compat.pymaap.logging_backend import JSONFormatter
        js = SharedRotatingFileHandler(os.path.join(log_dir, json_log), maxBytes=max_bytes,
                                       backupCount=backup_count)
        js.setFormatter(JSONFormatter())
        logger.addHandler(js)
    console = logging.StreamHandler()
    console.setLevel(console_level)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s.%(funcName)s] %(message)s"))
    logger.addHandler(console)
    return logger
