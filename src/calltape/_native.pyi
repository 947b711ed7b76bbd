"""Type stubs for calltape._native, the C engine's CPython binding."""

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Self, overload

class Recorder:
    """A recorded function: calls it and writes each call onto the tape."""

    __wrapped__: Any
    __name__: str
    __qualname__: str
    __module__: str
    __doc__: str | None
    tape: str | None
    def __init__(
        self,
        func: Callable[..., Any],
        *,
        args: bool = True,
        result: bool = True,
        cpu: bool = False,
        memory: bool = False,
        energy: bool | None = None,
        tape: str | None = None,
        redact: Any = None,
        sanitize: Callable[[str, Any], Any] | None = None,
        max_value_bytes: int | None = None,
        sample: int = 1,
        locals: bool = False,
        globals: bool = False,
        yields: bool = False,
        pickle: Any = None,
        flat: FlatProfile | None = None,
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: Any, objtype: type | None = None) -> Any: ...

class FlatProfile:
    """A function whose direct inner calls are timed at each call (calltape.flat_profile)."""

    __wrapped__: Any
    __name__: str
    __qualname__: str
    __module__: str
    __doc__: str | None
    limit: float | None
    mechanism: str | None
    def __init__(
        self,
        func: Callable[..., Any],
        result_cls: Callable[..., Any],
        limit: float | None = None,
        below: Callable[[Any], Any] | None = None,
        above: Callable[[Any], Any] | None = None,
        logger: Any = None,
        below_level: int = 0,
        above_level: int = 0,
        only: Any = None,
        ignore: Any = None,
        ignore_builtins: bool = False,
        kind: int = 0,
        run: Callable[..., Any] | None = None,
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: Any, objtype: type | None = None) -> Any: ...

def flat_site_call(offset: int, callee: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any: ...

class Monitor:
    """Records the calls of chosen code while running (see calltape.monitor)."""

    running: bool
    calls: int
    functions: int
    def __init__(
        self,
        include: str | Iterable[str] = (),
        exclude: str | Iterable[str] = (),
        *,
        paths: Iterable[str] = (),
        never: Iterable[str] = (),
        args: bool = True,
        result: bool = True,
        cpu: bool = False,
        memory: bool = False,
        energy: bool = False,
        locals: bool = False,
        globals: bool = False,
        tape: str | None = None,
        max_depth: int = 0,
        max_value_bytes: int = -1,
        sample: int = 1,
        max_value_depth: int = 0,
    ) -> None: ...
    def start(self) -> Self: ...
    def stop(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...

class Pending:
    """A generator or coroutine whose call is recorded when it finishes."""

    def send(self, value: Any) -> Any: ...
    def throw(self, *args: Any) -> Any: ...
    def close(self) -> None: ...
    def __iter__(self) -> Pending: ...
    def __next__(self) -> Any: ...
    def __await__(self) -> Pending: ...

class AsyncGenProxy:
    """An async generator whose call is recorded when it finishes."""

    def __aiter__(self) -> AsyncGenProxy: ...
    def __anext__(self) -> Pending: ...
    def asend(self, value: Any) -> Pending: ...
    def athrow(self, *args: Any) -> Pending: ...
    def aclose(self) -> Pending: ...

class Function:
    """A recorded function with its aggregates (durations in seconds)."""

    id: int
    module: str
    qualname: str
    file: str
    line: int
    calls: int
    raised: int
    @property
    def parameters(self) -> list[str]: ...
    @property
    def kinds(self) -> list[int]: ...
    @property
    def defaults(self) -> dict[str, Any]: ...
    @property
    def total(self) -> float | None:
        """Seconds in its calls, inclusive (None: the tape does not know it, as for a
        session of a tape recorded before calltape kept per-session totals)."""
    @property
    def self_time(self) -> float | None:
        """Seconds in its calls less the durations of the calls they made that were
        recorded (exclusive); None on calls recorded before calltape kept it."""
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    @property
    def mean(self) -> float | None: ...

class Session:
    """One process that recorded onto the tape."""

    id: int
    pid: int
    ppid: int
    parent: int | None
    host: str
    argv: list[str]
    python: str
    version: str
    start: datetime
    end: datetime | None
    mpi_rank: int | None
    counters: dict[str, int]
    sys_path0: str | None
    cwd: str | None

class Bound:
    """Arguments ready for ``function(*bound.args, **bound.kwargs)``."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

class Call:
    """One recorded call; values are rebuilt on first access, once."""

    id: int
    session: int
    parent: int | None
    depth: int
    start_ns: int
    duration_ns: int
    function: str
    qualname: str
    module: str
    file: str
    line: int
    func: Function
    start: datetime
    end: datetime
    duration: float
    outcome: str
    captured: str | None
    cpu_time: float | None
    memory: dict[str, int] | None
    energy: dict[str, float] | None
    thread: int | None
    thread_name: str | None
    test: str | None  # the pytest node id of the test it was made in (pytest --calltape)
    args: dict[str, Any]
    defaults: frozenset[str]
    bound: Bound
    result: Any
    exception: Any
    locals: dict[str, Any] | None
    globals: dict[str, Any] | None
    yielded: list[Any] | None
    preview: str
    def children(self) -> list[Call]:
        """The calls this call made directly (any thread), oldest first: tape.children(self)."""
    def readable(self) -> tuple[dict[str, Any], frozenset[str], Any]: ...
    def readable_slot(self, name: str) -> dict[str, Any] | list[Any] | None: ...
    def stored(self, name: str) -> Any: ...
    def replay(
        self, *, rel: float = 0.0, abs: float = 0.0, globals: str | None = None,
        record: bool = False,
    ) -> Any: ...

class Calls:
    """The calls a search found: iterating streams them, len() and indexing read them once."""

    def __iter__(self) -> Iterator[Call]: ...
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int) -> Call: ...
    @overload
    def __getitem__(self, index: slice) -> list[Call]: ...
    def count(self) -> int:
        """How many calls the search finds, its limit aside, without making them."""

class Tape:
    """A tape opened read-only."""

    path: str
    closed: bool
    trust: bool
    allow: tuple[str, ...]
    def __init__(
        self, path: str | os.PathLike[str], *, trust: bool = False, allow: Sequence[str] | str = ()
    ) -> None: ...
    def sessions(self) -> list[Session]: ...
    def functions(self, *, session: int | Sequence[int] | None = None) -> list[Function]: ...
    def last_run(self) -> list[int]: ...
    def _export(self, format: str, fd: int, procs: list[tuple[int, int, str]], *,
                session: list[int] | None = None, since: int = ..., until: int = ...,
                base_ns: int = 0, aggregate_fd: int = -1) -> int: ...
    def threads(self) -> list[dict[str, Any]]: ...
    def tests(
        self, test: str | None = None, *, session: int | Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        """The tests pytest --calltape ran: dicts of test, session, start, end (None: open)."""
    def search(
        self,
        function: str | Callable[[Function], object] | None = None,
        *,
        file: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        outcome: str | None = None,
        session: int | Sequence[int] | None = None,
        thread: int | None = None,
        args: dict[str, Any] | None = None,
        energy: dict[str, float] | None = None,
        order: str = "newest",
        limit: int | None = None,
        captured: str | None = None,
        test: str | None = None,
    ) -> Calls: ...
    def children(
        self,
        parent: Call | int | None = None,
        *,
        session: int | None = None,
        min_duration: float | None = None,
        limit: int | None = None,
    ) -> Calls:
        """The calls `parent` made directly (any thread), or a session's roots; oldest first."""
    def call(self, call_id: int) -> Call: ...
    def calls(self, function: str | Callable[[Function], object] | None = None) -> list[Call]: ...
    def replay(
        self, *call_ids: int, rel: float = 0.0, abs: float = 0.0, globals: str | None = None,
        record: bool = False, **filters: Any,
    ) -> Any: ...
    def load_blob(self, hash: bytes) -> bytes: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> bool: ...

class Context:
    """A named span of this process's time on the tape (the pytest plugin names each
    test's by its node id): search(test=) and Call.test find the calls made in it."""

    name: str
    kind: str
    open: bool
    def __init__(
        self, name: str, kind: str = "test", *, tape: str | os.PathLike[str] | None = None
    ) -> None: ...
    def begin(self) -> None: ...
    def end(self, *, at: int | None = None) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...

class Replayer:
    """Re-executes recorded calls and compares their outcomes (replay.c)."""

    def __init__(
        self,
        tape: Tape | None = None,
        *,
        rel: float = 0.0,
        abs: float = 0.0,
        globals: str | None = None,
        record: bool = False,
    ) -> None: ...
    @classmethod
    def bind(
        cls,
        outcome: Callable[..., Any],
        report: Callable[..., Any],
        run_coroutine: Callable[[Any], Any],
        run_asyncgen: Callable[[Any], list[Any]],
    ) -> None: ...
    def run(self, calls: Any) -> Any: ...
    def check(self, module: str) -> None: ...
    def replay(self, call: Any) -> Any: ...
    def skip_reason(self, call: Any, *, strict: bool = False) -> str | None: ...
    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any: ...
    def raised(self, exc: BaseException) -> tuple[str, str]: ...
    def session(self) -> int | None: ...

def compare(expected: Any, actual: Any, *, rel: float = 0.0, abs: float = 0.0) -> str | None: ...
def encode(value: Any) -> bytes: ...
def decode(data: bytes, *, trust: bool = False, allow: tuple[str, ...] | list[str] = ()) -> Any: ...
def literal(value: Any) -> str | None: ...
def resolve(module: str, qualname: str, file: str | None = None) -> Callable[..., Any]: ...
def push_import_path(folders: list[str] | tuple[str, ...]) -> list[str]: ...
def pop_import_path(added: list[str]) -> None: ...
def recorded_folders(sessions: Any, *, current: bool = True) -> list[str]: ...
def check_writable(path: str) -> None: ...
def prune(path: str, before_ns: int, keep_sessions: int = ..., max_bytes: int = ...) -> tuple[int, int, int]: ...
def parse_size(text: str) -> int: ...
def copy(src: str, dst: str) -> tuple[int, int]: ...
def configure(
    *,
    tape: str | os.PathLike[str] | Callable[[], str | os.PathLike[str]] | None = None,
    flush_interval: float | None = None,
    on_full: str | None = None,
    buffer_bytes: int | None = None,
    redact: Any = None,
    max_value_bytes: int | None = None,
    energy: bool | None = None,
    pickle: Any = None,
    retain: dict[str, str | int] | str | None = None,
) -> None: ...
def flush(timeout: float | None = None) -> bool: ...
def stats() -> dict[str, Any]: ...
def register_codec(
    type: type, name: str, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]
) -> None: ...
def unregister_codec(type: type) -> bool: ...
def mpi_rank() -> int | None: ...
def preview(wire: bytes, limit: int = 200) -> str: ...
def format_duration(seconds: float | None) -> str: ...
def nop(*args: Any) -> None: ...
def _bind(markers: dict[str, Any], info: dict[str, Any]) -> None: ...
def _after_fork_child() -> None: ...
def _shutdown() -> None: ...
