"""calltape.timer, calltape.catch_errors, calltape.metrics_start / metrics_end.

>>> @calltape.timer(max_arg_length=100, sanitize=lambda s: s.replace("secret", "*****"))
... def work(x, y): ...
>>> @calltape.catch_errors()          # logs/error.log (JSON lines), then re-raises
... def risky(): ...
>>> m = calltape.metrics_start()      # a block, recorded as a call named after its function
>>> calltape.metrics_end(m)

A timed function is a Recorder with CPU time and memory on; the texts of its
outputs (CSV row, JSON line, console message) are made in C (record/timer.c);
the JSON and console lines are handed to their loggers by the log thread
(calltape._logq, record/logq.c).  Here: the loggers (calltape-owned, never the
root's) and the Parquet writer.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import logging.handlers
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import _logq, _native  # noqa: F401 (_logq: the log thread's hand function set up)

_MIB = 1 << 20
TIMER_COLUMNS = ("Timestamp", "Process ID", "Thread Count", "UUID", "Function Name",
                 "Execution Time (s)", "CPU Time (sec)", "Memory Change (MB)",
                 "Final Memory Usage (MB)", "Arguments", "Log Message")
ERROR_COLUMNS = ("Timestamp", "UUID", "Function Name", "Error Message", "Arguments")


class SharedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler that several processes may share.

    Each line is one ``write()`` on a file opened ``O_APPEND``: lines of
    several processes never interleave.  Rotation is taken under an
    ``flock`` of ``FILE.lock`` held only while renaming, and the size is
    checked again under it, so two processes never rotate twice; a process
    whose file was rotated by another reopens the path before its next line.
    """

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        """Reopen when another process rotated, then the size test."""
        if self.stream is not None:
            try:
                st = os.stat(self.baseFilename)
                if st.st_ino != os.fstat(self.stream.fileno()).st_ino:
                    self.stream.close()
                    self.stream = self._open()
            except OSError:
                self.stream.close()
                self.stream = self._open()
        return bool(super().shouldRollover(record))

    def doRollover(self) -> None:
        """Rotate under the lock file, when the file is still over the size."""
        with open(self.baseFilename + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                size = os.stat(self.baseFilename).st_size
            except OSError:
                size = 0
            if size >= self.maxBytes > 0:
                super().doRollover()
            elif self.stream is not None:
                self.stream.close()
                self.stream = self._open()


_loggers: dict[tuple[str, int, int], logging.Logger] = {}
_lock = threading.Lock()


def _file_logger(path: str, max_bytes: int, backup_count: int) -> logging.Logger:
    """The calltape-owned logger writing JSON lines to ``path`` (one per file and process)."""
    key = (os.path.abspath(path), os.getpid(), 0)
    with _lock:
        log = _loggers.get(key)
        if log is None:
            log = logging.getLogger(f"calltape.timer.file.{key[0]}")
            log.propagate = False
            log.setLevel(logging.INFO)
            log.handlers.clear()
            h = SharedRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count)
            h.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(h)
            _loggers[key] = log
    return log


def _console_logger() -> logging.Logger:
    log = logging.getLogger("calltape.timer.console")
    if not log.handlers:
        log.propagate = False
        log.setLevel(logging.INFO)
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
        log.addHandler(h)
    return log


class _ParquetRows:
    """Rows of one process into its own file of the dataset folder, a row group per batch."""

    def __init__(self, folder: str, columns: tuple[str, ...], batch: int = 1000) -> None:
        try:
            import pyarrow
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ImportError('results="parquet" needs pyarrow: pip install "calltape[parquet]"'
                              ) from None
        os.makedirs(folder, exist_ok=True)
        self.folder, self.columns, self.batch = folder, columns, batch
        self.rows: list[tuple[Any, ...]] = []
        self.writer: Any = None
        self.pid = os.getpid()
        self.lock = threading.Lock()
        atexit.register(self.close)
        import multiprocessing.util as mpu  # children leave through os._exit: finalizers run

        mpu.Finalize(self, self.close, exitpriority=-50)

    def __call__(self, row: tuple[Any, ...]) -> None:
        with self.lock:
            if os.getpid() != self.pid:  # a forked child: a file of its own
                self.rows, self.writer, self.pid = [], None, os.getpid()
            self.rows.append(row)
            if len(self.rows) >= self.batch:
                self._write()

    def _write(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        if not self.rows:
            return
        cols = list(zip(*self.rows))
        table = pa.table({name: pa.array(list(c)) for name, c in zip(self.columns, cols)})
        if self.writer is None:
            path = os.path.join(self.folder, f"part-{os.uname().nodename}-{self.pid}-"
                                f"{id(self):x}.parquet")
            self.writer = pq.ParquetWriter(path, table.schema)
        self.writer.write_table(table)
        self.rows = []

    def close(self) -> None:
        """Write what is buffered and the file's footer."""
        with self.lock:
            if os.getpid() != self.pid:
                return
            try:
                self._write()
            finally:
                if self.writer is not None:
                    self.writer.close()
                    self.writer = None


def _check_bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be True or False, not {v!r}")
    return v


def _sink(*, errors: bool, log_to_console: bool, log_to_file: bool, results: str | None,
          log_dir: str | os.PathLike[str], log_name: str, max_bytes: int, backup_count: int,
          sanitize: Callable[[str], str] | None, max_arg_length: int | None,
          resources: bool) -> Any:
    _check_bool("log_to_console", log_to_console)
    _check_bool("log_to_file", log_to_file)
    if results not in (None, "csv", "parquet"):
        raise ValueError(f"results must be 'csv', 'parquet' or None, not {results!r}")
    if not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be an integer >= 0 (0: never rotate), not {max_bytes!r}")
    if not isinstance(backup_count, int) or backup_count < 0:
        raise ValueError(f"backup_count must be an integer >= 0, not {backup_count!r}")
    if sanitize is not None and not callable(sanitize):
        raise TypeError(f"sanitize must be a callable taking and returning a str, not {sanitize!r}")
    log_dir = os.fspath(log_dir)
    csv = rows = log = None
    if log_to_file:
        try:
            os.makedirs(log_dir, exist_ok=True)
        except OSError as e:
            raise OSError(f"calltape.timer cannot create its log folder {log_dir!r}: {e.strerror}"
                          ) from None
        log = _file_logger(os.path.join(log_dir, log_name), max_bytes, backup_count)
        stem = "error_results" if errors else "timing_results"
        if results == "csv":
            csv = os.path.join(log_dir, stem + ".csv")
        elif results == "parquet":
            rows = _ParquetRows(os.path.join(log_dir, stem + ".parquet"),
                                ERROR_COLUMNS if errors else TIMER_COLUMNS)
    console = _console_logger() if log_to_console else None
    return _native.TimerSink(csv=csv, log=log, console=console, rows=rows, sanitize=sanitize,
                             max_arg_length=max_arg_length, errors=errors, resources=resources)


def _tape_sanitize(sanitize: Callable[[str], str] | None) -> Any:
    if sanitize is None:
        return None
    return lambda name, value: sanitize(value) if isinstance(value, str) else value


def timer(func: Any = None, /, *, log_to_console: bool = True, log_to_file: bool = True,
          track_resources: bool = True, max_arg_length: int | None = None,
          sanitize: Callable[[str], str] | None = None, results: str | None = "csv",
          log_dir: str | os.PathLike[str] = "logs", max_bytes: int = 10 * _MIB,
          backup_count: int = 5, tape: Any = None) -> Any:
    """Time every call: the tape (time, CPU, memory, arguments), ``LOG_DIR/timing.log``
    (JSON lines, rotated), a console line and ``LOG_DIR/timing_results.csv`` (or a
    ``.parquet`` dataset folder, one file per process), each naming the call's UUID.

    >>> @calltape.timer(log_to_console=False, results="parquet")
    ... def f(x): ...
    """
    sink = _sink(errors=False, log_to_console=log_to_console, log_to_file=log_to_file,
                 results=results, log_dir=log_dir, log_name="timing.log", max_bytes=max_bytes,
                 backup_count=backup_count, sanitize=sanitize, max_arg_length=max_arg_length,
                 resources=_check_bool("track_resources", track_resources))

    def wrap(f: Any) -> Any:
        return _native.Recorder(f, cpu=track_resources, memory=track_resources, tape=tape,
                                sanitize=_tape_sanitize(sanitize), timer=sink)
    return wrap if func is None else wrap(func)


def catch_errors(func: Any = None, /, *, log_to_console: bool = True, log_to_file: bool = True,
                 error_log_file: str | os.PathLike[str] | None = None,
                 max_bytes: int = 10 * _MIB, backup_count: int = 5,
                 sanitize: Callable[[str], str] | None = None, max_arg_length: int | None = None,
                 results: str | None = None, log_dir: str | os.PathLike[str] = "logs",
                 tape: Any = None) -> Any:
    """Record every exception with its traceback and sanitized arguments on the tape and
    in ``LOG_DIR/error.log`` (JSON lines, rotated), then re-raise it unchanged.

    ``results="csv"`` also appends a row to ``LOG_DIR/error_results.csv``.
    """
    if error_log_file is not None:
        path = os.fspath(error_log_file)
        log_dir, log_name = os.path.dirname(path) or ".", os.path.basename(path)
    else:
        log_name = "error.log"
    sink = _sink(errors=True, log_to_console=log_to_console, log_to_file=log_to_file,
                 results=results, log_dir=log_dir, log_name=log_name, max_bytes=max_bytes,
                 backup_count=backup_count, sanitize=sanitize, max_arg_length=max_arg_length,
                 resources=False)

    def wrap(f: Any) -> Any:
        return _native.Recorder(f, tape=tape, sanitize=_tape_sanitize(sanitize), timer=sink)
    return wrap if func is None else wrap(func)


class MetricsStart:
    """What :func:`metrics_start` returns: pass it to :func:`metrics_end`."""

    __slots__ = ("name", "recorder", "token")

    def __init__(self, name: str, token: Any, recorder: Any) -> None:
        self.name, self.token, self.recorder = name, token, recorder


_blocks: dict[tuple[Any, ...], Any] = {}


def _block_recorder(code: Any, module: str, name: str, options: dict[str, Any]) -> Any:
    key = (code, module, name, tuple(sorted(options.items(), key=lambda kv: kv[0])))
    r = _blocks.get(key)
    if r is None:
        def block() -> None:
            """A block measured by metrics_start / metrics_end."""
        block.__code__ = block.__code__.replace(co_filename=code.co_filename, co_name=name,
                                                co_firstlineno=code.co_firstlineno,
                                                co_qualname=name)
        block.__qualname__ = block.__name__ = name
        block.__module__ = module
        r = timer(block, **options)
        _blocks[key] = r
    return r


def metrics_start(name: str | None = None, **timer_options: Any) -> MetricsStart:
    """Begin a block, recorded as a call named ``name`` (default: the calling function's
    name) with ``calltape.timer``'s outputs and options (``log_to_console=False``...).

    >>> m = calltape.metrics_start()
    >>> ...
    >>> calltape.metrics_end(m)
    """
    frame = sys._getframe(1)
    while frame.f_globals.get("__name__") in ("calltape.compat.pymaap.monitoring",):
        frame = frame.f_back  # the facade's caller
    if name is None:
        name = frame.f_code.co_name
    if not isinstance(name, str):
        raise TypeError(f"metrics_start(name=) must be a str, not {name!r}")
    r = _block_recorder(frame.f_code, frame.f_globals.get("__name__", "?"), name, timer_options)
    return MetricsStart(name, _native.timer_begin(r), r)


def metrics_end(start: MetricsStart) -> str | None:
    """End the block ``start`` began: record it and write its outputs; its UUID."""
    if not isinstance(start, MetricsStart):
        raise TypeError(f"metrics_end needs what metrics_start returned, not {start!r}")
    uuid: str | None = _native.timer_end(start.recorder, start.token)
    return uuid
