"""Helpers for the regression tests that ``calltape make-tests`` writes.

>>> from calltape.testing import add_import_path, assert_same, call, resolve
>>> add_import_path(__file__, "..")             # the project's folder, as the program had it
>>> price = resolve("shop", "price")          # the original, without @calltape.record
>>> assert_same(call(price, 3, 9.5), 28.5)    # AssertionError says where values differ
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Self

from . import _native

# Replay's rules, asked rather than repeated: how a call is run to its end
# and how an exception is named (a Replayer of no tape replays nothing).
_REPLAYER = _native.Replayer()

__all__ = ["Breakpoint", "add_import_path", "assert_raised", "assert_same", "call", "load_values", "resolve"]

resolve: Callable[..., Callable[..., Any]] = _native.resolve


def add_import_path(test_file: str, *folders: str) -> list[str]:
    """Put ``folders`` (relative to the folder of ``test_file``, or absolute) in
    front of sys.path where they are missing, so that the test imports the
    project's modules as the recorded program did, under plain ``pytest`` as
    under ``python -m pytest``.  Returns the folders it added."""
    here = os.path.dirname(os.path.abspath(test_file))
    return _native.push_import_path([os.path.normpath(os.path.join(here, f)) for f in folders])


def call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` as replay does: a generator runs to its end and gives its return
    value, a coroutine runs on a fresh event loop, an async generator is exhausted."""
    return _REPLAYER.call(fn, *args, **kwargs)


def assert_same(actual: Any, expected: Any, *, rel: float = 0.0, abs: float = 0.0) -> None:
    """Fail unless ``actual`` is what was recorded (calltape.compare's rules)."""
    diff = _native.compare(expected, actual, rel=rel, abs=abs)
    if diff is not None:
        raise AssertionError(diff.replace("value", "result", 1) + "  (recorded != now)")


def assert_raised(thunk: Callable[[], Any], type: str, message: str) -> None:
    """Fail unless ``thunk()`` raises an exception of the recorded type
    (``module.Qualname``) with the recorded message."""
    try:
        result = thunk()
    except Exception as exc:
        kind, now = _REPLAYER.raised(exc)  # as the recorder wrote the recorded one
        if (kind, now) != (type, message):
            raise AssertionError(f"recorded {type}: {message}, raised now {kind}: {now}") from exc
        return
    raise AssertionError(f"recorded {type}: {message}, returned {result!r} now")


def load_values(test_file: str, *, trust: bool = False, allow: tuple[str, ...] = ()) -> list[Any]:
    """The values stored next to a generated test module (``<stem>.calltape``),
    rebuilt by calltape's restricted unpickler (modules in ``allow`` permitted)."""
    path = os.path.splitext(test_file)[0] + ".calltape"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise FileNotFoundError(f"the values of {test_file} are missing: {path}: {exc.strerror}")
    return _native.decode(data, trust=trust, allow=allow)


# ---- breakpoints (calltape.probes) ------------------------------------------

class Breakpoint:
    """Pauses calls of ``target`` at ``event`` ("call", "return" or "error")
    until the test calls ``release()``: for tests of concurrency.

    >>> with Breakpoint("shop.Archive.unarchive") as bp:
    ...     bp.start_thread(archive.unarchive)   # runs into the breakpoint
    ...     bp.wait()                            # until it is paused there
    ...     frame = bp.stackframe                # the paused call's frame
    ...     bp.release()                         # lets it go on

    ``target`` is what ``calltape.probes.attach_to`` takes (a dotted name, a
    function, or ``(owner, "name")``); ``condition`` an expression over the
    probe namespace (or a callable taking it) that must hold for a call to
    pause.  ``hits`` counts the paused calls, ``calls`` every call seen; both
    are updated under one lock, and ``wait`` sleeps on a condition variable
    (no polling).  On 3.11 the probe patches the target's references (see
    calltape.probes)."""

    def __init__(self, target: Any, event: str = "call", condition: Any = None,
                 timeout: float = 10.0) -> None:
        import threading

        from . import probes

        if event not in ("call", "return", "error"):
            raise ValueError(f"a breakpoint's event is 'call', 'return' or 'error', not {event!r}")
        self._target = (target,)  # a tuple, which 3.11's probes do not patch
        self.event = event
        self.timeout = timeout
        self.condition = condition
        self.hits = 0
        self.calls = 0
        self.stackframe: Any = None
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self._cv = threading.Condition()
        self._released = False
        self._probe = probes.attach_to(target)
        self._key = f"breakpoint:{id(self)}"
        expr = condition if isinstance(condition, str) else "1"
        self._instrument = _break_type()(f"breakpoint {probes._key(target)}", expr, event=event)
        self._instrument.bp = self

    @property
    def target(self) -> Any:
        """What the breakpoint was given."""
        return self._target[0]

    def _fire(self, value: Any, namespace: dict[str, Any] | None) -> None:
        with self._cv:
            self.calls += 1
            if self._released:
                return
            if callable(self.condition) and not self.condition(namespace):
                return
            if not value:
                return
            self.hits += 1
            self.stackframe = namespace.get("frame") if namespace else None
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._released)

    def start(self) -> Self:
        self._probe.instruments[self._key] = self._instrument
        self._probe.start()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Releases the paused calls, takes the breakpoint away, joins the
        threads of start_thread."""
        self.release()
        self._probe.instruments.pop(self._key, None)
        if not self._probe.instruments:
            self._probe.stop()
        for t in self.threads:
            t.join(self.timeout)

    def start_thread(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Runs ``func(*args, **kwargs)`` on a new daemon thread (its
        exception kept in ``errors``); returns the thread."""
        import threading

        def run() -> None:
            try:
                func(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - kept for the test
                self.errors.append(exc)

        t = threading.Thread(target=run, name=f"breakpoint-{getattr(func, '__name__', 'func')}",
                             daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def wait(self, timeout: float | None = None, hits: int = 1) -> None:
        """Blocks until ``hits`` calls are paused (in all); AssertionError
        naming the target when that did not happen within ``timeout``
        (the breakpoint's own by default)."""
        limit = self.timeout if timeout is None else timeout
        with self._cv:
            ok = self._cv.wait_for(lambda: self.hits >= hits, limit)
        if not ok:
            from . import probes

            cond = f" with condition {self.condition!r}" if self.condition is not None else ""
            raise AssertionError(
                f"breakpoint on {probes._key(self.target)} ({self.event}{cond}) was hit"
                f" {self.hits} of {hits} time(s) within {limit} s ({self.calls} calls seen)")

    def release(self) -> None:
        """Lets every paused call go on; later calls no longer pause."""
        with self._cv:
            self._released = True
            self._cv.notify_all()


_BREAK_TYPE: Any = None


def _break_type() -> Any:
    """The breakpoint's instrument class, made on first use (probes load then)."""
    global _BREAK_TYPE
    if _BREAK_TYPE is None:
        from . import probes

        class BreakInstrument(probes.Instrument):
            bp: Breakpoint

            def fire(self, value: Any, namespace: dict[str, Any] | None) -> None:
                self.bp._fire(value, namespace)

        _BREAK_TYPE = BreakInstrument
    return _BREAK_TYPE
