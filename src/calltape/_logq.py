"""The log thread: hands the lines calltape queued in C (record/logq.c) to `logging`.

@calltape.timer's JSON and console lines and the probes' LogInstrument lines
are formatted on the calling thread and queued; one daemon thread per process
("calltape-log") hands them, in queue order, to their logger, the LogRecord
made with the time and thread of the queuing (the thread's name as it was at
its first line), and the logger's level, filters and handlers applied as
``logger.handle`` does.  That is done in C (record/logrecord.c); ``_hand``
does it here for a logger class with its own ``makeRecord`` or a record
factory set with ``logging.setLogRecordFactory``.  ``flush_logs()`` waits for
what was queued; at exit (atexit, and multiprocessing children's finalizers)
everything queued is handed before the interpreter goes.
"""

from __future__ import annotations

import atexit
import logging
import threading

from . import _native

_start_time = logging._startTime  # type: ignore[attr-defined]
_start_s = _start_time / 1e9 if _start_time > 1e12 else _start_time  # 3.13: ns
_threads: dict[int, threading.Thread] = {}  # 0: this process's log thread


def _hand(target: tuple[logging.Logger, str], level: int, text: str, created: float,
          ident: int, thread_name: str) -> None:
    logger, pathname = target
    if not logger.isEnabledFor(level):
        return
    r = logger.makeRecord(logger.name, level, pathname, 0, text, None, None)
    r.created = created
    r.msecs = int((created - int(created)) * 1000) + 0.0
    r.relativeCreated = (created - _start_s) * 1000
    r.thread, r.threadName = ident, thread_name
    logger.handle(r)


def _start() -> None:
    t = threading.Thread(target=_native.logq_run, name="calltape-log", daemon=True)
    t.start()
    _threads[0] = t


def flush_logs(timeout: float | None = None) -> bool:
    """Wait until every log line queued so far (calltape.timer's, the probes') was handed
    to its logging handlers; False when ``timeout`` seconds passed first."""
    ok: bool = _native.logq_flush(timeout)
    return ok


def _at_exit() -> None:
    _native.logq_flush(None)
    _native.logq_stop()
    t = _threads.pop(0, None)
    if t is not None and t.is_alive() and t is not threading.current_thread():
        t.join(5.0)


_native.logq_setup(_hand, _start)
atexit.register(_at_exit)
