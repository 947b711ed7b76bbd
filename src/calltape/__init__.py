"""calltape: a flight recorder for Python function calls, with a C engine.

>>> import calltape
>>> @calltape.record
... def price(qty: int, unit: float, currency: str = "EUR", *, discount=0.0):
...     return qty * unit * (1 - discount)
>>> price(3, 9.5, discount=0.1)
>>> calltape.flush()                    # also happens at exit
>>> calltape.open("calltape.db").calls("price")[0].args
{'qty': 3, 'unit': 9.5, 'currency': 'EUR', 'discount': 0.1}

PYTEST_DONT_REWRITE: pytest marks every package of a distribution that ships a
pytest plugin for assertion rewriting, and warns (an error under
``filterwarnings = error``) when the package is already imported, as it is
under ``calltape run -m pytest``; calltape's modules are not tests.
"""

from __future__ import annotations

import atexit
import os
import sys

from . import _native
from ._markers import (
    ExceptionInfo,
    RecordingWarning,
    Redacted,
    RefusedGlobal,
    ReplayRefused,
    TapeError,
    Truncated,
    Unencodable,
    Unreadable,
)
from ._monitor import monitor

TYPE_CHECKING = False  # typing loads on demand: `import calltape` stays quick (the CLI's start)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, overload

    from ._export import export
    from ._replay import Outcome, Report
    from ._report import report
    from .flat import FlatResult, flat_profile
    from .rewrite import wrap_calls

    F = TypeVar("F", bound=Callable[..., Any])
else:
    def overload(func):  # what typing.overload leaves at run time: the last definition wins
        return func

__version__ = "0.1.0"
__all__ = [
    "Bound",
    "Call",
    "Calls",
    "ExceptionInfo",
    "FlatResult",
    "Function",
    "Monitor",
    "Outcome",
    "Recorder",
    "RecordingWarning",
    "Redacted",
    "RefusedGlobal",
    "ReplayRefused",
    "Report",
    "Session",
    "Tape",
    "TapeError",
    "Truncated",
    "Unencodable",
    "Unreadable",
    "catch_errors",
    "compare",
    "configure",
    "copy",
    "export",
    "flat_profile",
    "flush",
    "flush_logs",
    "metrics_end",
    "metrics_start",
    "monitor",
    "open",
    "record",
    "register_codec",
    "report",
    "stats",
    "timer",
    "wrap_calls",
]

Recorder = _native.Recorder
Monitor = _native.Monitor
Tape = _native.Tape          # the reader, with the views it returns, all in C
Call = _native.Call
Calls = _native.Calls
Function = _native.Function
Session = _native.Session
Bound = _native.Bound
flush = _native.flush
stats = _native.stats
register_codec = _native.register_codec
compare = _native.compare

_native._bind(
    {"RecordingWarning": RecordingWarning, "TapeError": TapeError,
     "RefusedGlobal": RefusedGlobal, "ReplayRefused": ReplayRefused, "Redacted": Redacted, "Truncated": Truncated,
     "Unencodable": Unencodable, "Unreadable": Unreadable, "ExceptionInfo": ExceptionInfo},
    {"host": os.uname().nodename, "python": sys.version.split()[0], "version": __version__},
)


def __getattr__(name: str) -> Any:
    # replay's Python side (and asyncio, which it needs) loads on first use:
    # `import calltape` stays quick for programs that only record
    if name in ("Outcome", "Report"):
        from . import _replay

        return getattr(_replay, name)
    if name in ("flat_profile", "FlatResult"):  # loads logging: on first use
        from . import flat

        return getattr(flat, name)
    if name == "export":  # calltape.export(tape, format=..., out=...): on first use
        from ._export import export

        return export
    if name == "report":  # calltape.report(tape, out=...): loads matplotlib, on first use
        from ._report import report

        return report
    if name == "flush_logs":  # loads logging
        from ._logq import flush_logs

        return flush_logs
    if name in ("timer", "catch_errors", "metrics_start", "metrics_end"):  # loads logging
        from . import _timer

        return getattr(_timer, name)
    if name == "wrap_calls":  # loads ast and inspect: on first use
        from .rewrite import wrap_calls

        return wrap_calls
    raise AttributeError(f"module 'calltape' has no attribute {name!r}")


@overload
def record(func: F, /) -> F: ...
@overload
def record(*, args: bool = ..., result: bool = ..., cpu: bool = ..., memory: bool = ...,  # noqa: F811
           energy: bool | None = ..., tape: str | os.PathLike[str] | None = ..., redact: Any = ...,
           sanitize: Callable[[str, Any], Any] | None = ...,
           max_value_bytes: int | None = ..., sample: int = ..., locals: bool = ...,
           globals: bool = ..., yields: bool = ..., pickle: Any = ...) -> Callable[[F], F]: ...
def record(func: Any = None, /, **options: Any) -> Any:  # noqa: F811
    """Record every call of ``func`` onto the tape.

    >>> @calltape.record
    ... def f(a, b): ...
    >>> @calltape.record(cpu=True, energy=True, sample=10, redact=["pin"])
    ... def g(pin, amount): ...
    >>> @calltape.record(locals=True, globals=True)   # call.locals, call.globals
    ... def h(x): ...
    """
    if func is None:
        return lambda f: Recorder(f, **options)
    return Recorder(func, **options)


def configure(*, tape: str | os.PathLike[str] | Callable[[], str | os.PathLike[str]] | None = None,
              **options: Any) -> None:
    """Set the default tape and recording options for later calls.

    ``tape`` is also exported as ``CALLTAPE_TAPE`` so that child processes
    record onto the same tape.  A callable is a *namer*: it is called with
    no argument when a call first needs the default tape, and the path it
    returns becomes the tape (and is exported then).

    >>> calltape.configure(tape="/tmp/run.db", flush_interval=0.5, on_full="drop")
    >>> calltape.configure(energy=True)     # RAPL energy for record(energy=None) functions
    >>> calltape.configure(tape=lambda: f"/tmp/run-{os.getpid()}.db")   # named at first use
    >>> calltape.configure(retain={"older_than": "7d", "max_size": "2GB", "keep_sessions": 10})

    ``retain`` is applied by the writer as it records (any of the three rules;
    ``"older_than=7d,max_size=2GB"``, the text of ``CALLTAPE_RETAIN`` and
    ``calltape run --retain``, is read too) and exported as ``CALLTAPE_RETAIN``.
    """
    _native.configure(tape=tape, **options)
    retain = options.get("retain")
    if retain is not None:  # the child processes' too
        os.environ["CALLTAPE_RETAIN"] = (retain if isinstance(retain, str) else
                                         ",".join(f"{k}={v}" for k, v in retain.items()))
    if tape is not None and not (callable(tape) and not hasattr(tape, "__fspath__")):
        text = os.fspath(tape)
        # a server's URL (postgresql://...) as given, a file's path absolute
        os.environ["CALLTAPE_TAPE"] = text if "://" in text else os.path.abspath(text)


def open(path: str | os.PathLike[str] | None = None, *, trust: bool = False,
         allow: list[str] | tuple[str, ...] = ()) -> Tape:
    """Open a tape for reading (default: ``$CALLTAPE_TAPE``, then ``./calltape.db``)."""
    if path is None:
        path = _native.default_tape()
    return Tape(path, trust=trust, allow=allow)


def copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> tuple[int, int]:
    """Copy the tape `src` onto the tape `dst` (a file or a ``postgresql://`` URL,
    created when missing; the tapes it holds stay): every session with its calls,
    values, threads, tests' spans and probe specs, with `dst`'s own ids.  What
    this process recorded so far is written first.  Returns (sessions, calls)
    copied; TapeError says in one sentence why not."""
    _native.flush()
    return _native.copy(os.fspath(src), os.fspath(dst))


class _ForkAnchor:
    """Keeps the multiprocessing after-fork registration alive (it holds a weak reference)."""


_fork_anchor = _ForkAnchor()
_mp_registered = False


def _flush_at_multiprocessing_exit(_: object = None) -> None:
    # multiprocessing children (fork, spawn and forkserver alike) leave
    # through os._exit() or after multiprocessing's own exit path, which
    # skips atexit; their finalizers still run, registered after
    # Process._bootstrap cleared the parent's.
    util = sys.modules["multiprocessing.util"]
    util.Finalize(None, _flush_logs_if_queued, exitpriority=-90)
    util.Finalize(None, _native.flush, exitpriority=-100)


def _flush_logs_if_queued() -> None:
    logq = sys.modules.get("calltape._logq")  # loaded by calltape.timer and the probes
    if logq is not None:
        logq.flush_logs()


def _register_multiprocessing() -> None:
    # Process._bootstrap runs the after-fork hooks in every child it starts,
    # after clearing the finalizers: registered once multiprocessing is
    # imported (here, or at the next fork), they reach every child.  Spawn
    # and forkserver children are started after get_preparation_data(), in
    # the parent: the session they will name as parent is exported first
    # (coverage.py hooks the same function).
    global _mp_registered
    if _mp_registered or "multiprocessing" not in sys.modules:
        return
    from multiprocessing import spawn, util

    util.register_after_fork(_fork_anchor, _flush_at_multiprocessing_exit)
    prepare = spawn.get_preparation_data

    def get_preparation_data(name: str) -> dict[str, Any]:
        _native._children_session()
        return prepare(name)

    spawn.get_preparation_data = get_preparation_data
    _mp_registered = True


def _before_fork() -> None:
    _register_multiprocessing()
    _native._before_fork()  # everything written, no writer thread while fork() runs


os.register_at_fork(before=_before_fork, after_in_child=_native._after_fork_child)
atexit.register(_native._shutdown)
_native._install_sigterm()  # writes what is pending, then SIGTERM does what it did
_native._watch_children()  # subprocesses and exec name this process's session as parent
_register_multiprocessing()
if "multiprocessing.util" in sys.modules and sys.modules["multiprocessing"].parent_process():
    _flush_at_multiprocessing_exit()  # imported by a child after its _bootstrap began


def _retain_from_environment() -> None:
    """$CALLTAPE_RETAIN (exported by configure(retain=...) and calltape run
    --retain) for this process's writer; rules it cannot read are one
    RecordingWarning, and the program records without them."""
    text = os.environ.get("CALLTAPE_RETAIN")
    if not text:
        return
    try:
        _native.configure(retain=text)
    except ValueError as exc:
        import warnings

        warnings.warn(RecordingWarning(f"CALLTAPE_RETAIN is not applied: {exc}"), stacklevel=3)


_retain_from_environment()
