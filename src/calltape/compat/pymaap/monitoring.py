"""``pymaap.monitoring``: Timer, ErrorCatcher, sanitizer, get_metrics_start/end."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ... import _timer

_MIB = 1 << 20


def _tape() -> str | None:
    # the results command reads LOG_DIR/calltape.db unless calltape was configured
    return None if os.environ.get("CALLTAPE_TAPE") else os.path.abspath("logs/calltape.db")


def sanitizer(arg_str: str) -> str:
    """PyMAAP's example sanitizer: every digit becomes ``*``."""
    return "".join("*" if c.isdigit() else c for c in arg_str)


class Timer:
    """``@Timer(log_to_console=True, log_to_file=True, backup_count=5, max_bytes=10 MiB,
    track_resources=True, max_arg_length=None, sanitize_func=None, results_format="csv",
    use_multiprocessing=False)``: ``calltape.timer`` with PyMAAP's names.

    ``use_multiprocessing=True`` is accepted for code written for PyMAAP: every
    process writes its own rows without a queue, so it changes nothing but
    ``results_format`` checks.
    """

    def __init__(self, log_to_console: bool = True, log_to_file: bool = True,
                 backup_count: int = 5, max_bytes: int = 10 * _MIB, track_resources: bool = True,
                 max_arg_length: int | None = None, sanitize_func: Callable[[str], str] | None = None,
                 results_format: str = "csv", use_multiprocessing: bool = False) -> None:
        fmt = results_format.lower() if isinstance(results_format, str) else results_format
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"results_format must be either 'csv' or 'parquet', not {results_format!r}")
        self.use_multiprocessing = bool(use_multiprocessing)
        self._decorate = _timer.timer(log_to_console=log_to_console, log_to_file=log_to_file,
                                      track_resources=track_resources,
                                      max_arg_length=max_arg_length, sanitize=sanitize_func,
                                      results=fmt, log_dir="logs", max_bytes=max_bytes,
                                      backup_count=backup_count, tape=_tape())

    def __call__(self, func: Any = None) -> Any:
        if func is None:
            return self.__call__
        return self._decorate(func)


class ErrorCatcher:
    """``@ErrorCatcher(log_to_console=True, log_to_file=True, error_log_file=None,
    max_bytes=10 MiB, backup_count=5, sanitize_func=None, results_format="csv",
    max_arg_length=None, use_multiprocessing=False)``: ``calltape.catch_errors``;
    rows also go to ``logs/error_results.csv`` (or ``.parquet``) as in PyMAAP 0.2.1."""

    def __init__(self, log_to_console: bool = True, log_to_file: bool = True,
                 error_log_file: str | None = None, max_bytes: int = 10 * _MIB,
                 backup_count: int = 5, sanitize_func: Callable[[str], str] | None = None,
                 results_format: str = "csv", max_arg_length: int | None = None,
                 use_multiprocessing: bool = False) -> None:
        fmt = results_format.lower() if isinstance(results_format, str) else results_format
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"results_format must be either 'csv' or 'parquet', not {results_format!r}")
        self.use_multiprocessing = bool(use_multiprocessing)
        self._decorate = _timer.catch_errors(
            log_to_console=log_to_console, log_to_file=log_to_file,
            error_log_file=error_log_file, max_bytes=max_bytes, backup_count=backup_count,
            sanitize=sanitize_func, max_arg_length=max_arg_length, results=fmt, log_dir="logs",
            tape=_tape())

    def __call__(self, func: Any = None) -> Any:
        if func is None:
            return self.__call__
        return self._decorate(func)


def get_metrics_start(func_name: str | None = None) -> dict[str, Any]:
    """Begin a block (named after the calling function); PyMAAP's dict keys."""
    start = _timer.metrics_start(func_name, log_to_console=False, tape=_tape())
    return {"func": start.name, "id": None, "wall_start": time.time(),
            "perf_start": time.perf_counter(), "_calltape": start}


def get_metrics_end(metrics_start: dict[str, Any], func_name: str | None = None) -> dict[str, Any]:
    """End the block; its UUID (the one in logs/timing.log and the CSV) as ``id``."""
    uuid = _timer.metrics_end(metrics_start["_calltape"])
    perf_end = time.perf_counter()
    return {"func": func_name or metrics_start["func"], "id": uuid, "wall_end": time.time(),
            "perf_end": perf_end, "duration": perf_end - metrics_start["perf_start"]}
