"""callmonitor's names over calltape: ``from calltape.compat.callmonitor import ...``.

The seed's examples run with only the import changed::

    from calltape.compat.callmonitor import intercept, load

    @intercept
    def test_fn_2(x, y=2, z=3):
        pass

    test_fn_2(1)                        # recorded onto call-monitor/calltape.db
    db = load("call-monitor")
    args, kwargs = db.get("test_fn_2", 1)       # ([1], {}): the first call is 1
    db.get_args("test_fn_2", 1)                 # dict_keys(['x', 'y', 'z'])

Names and shapes only: ``intercept`` is ``@calltape.record`` (inputs, and
also the result and the timing), the database is a calltape tape in a
``call-monitor`` folder (``call-monitor-1``, ... when it exists: never
overwritten) named at the first intercepted call (``configure(tape=namer)``),
``load`` reads it with ``calltape.open``, and argument ``Handler``\\ s are
calltape codecs.  Unlike the original, an argument that cannot be pickled
never fails the call, ``get(name, 0)`` is an error (not the last call),
keyword-only arguments are kept, threads record without sharing a counter,
and functions are told apart by module and qualname.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Self, TypeVar

import calltape
from calltape import _native

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "CONTEXT", "DB", "REGISTRY", "SETTINGS", "AmbiguousName", "Args", "CallNotLogged", "Context",
    "DBNotInitialized", "DefaultHandler", "Handler", "NPHandler", "Registry", "Settings",
    "intercept", "load", "save_db", "snapshot",
]

ROOT = "call-monitor"           # the seed's folder name
TAPE = "calltape.db"            # the tape inside each folder
# an input is kept whole up to this size encoded (calltape's default budget
# is 64 KiB): callmonitor's point is to bring the inputs back
MAX_VALUE_BYTES = 1 << 30
# a child process joins its parent's database (as its own session) when it
# would name the same folder: the folder and its tag, exported at init
_ENV_FOLDER = "CALLTAPE_CALLMONITOR_FOLDER"
_ENV_TAG = "CALLTAPE_CALLMONITOR_TAG"


class CallNotLogged(LookupError):
    """No such call (or function) on the database."""


class AmbiguousName(LookupError):
    """A bare name that several recorded functions share."""


class DBNotInitialized(RuntimeError):
    """``CONTEXT.db`` before the first intercepted call."""


# ---- settings and the output folder ------------------------------------------


class Settings:
    """The process's settings (one instance: ``Settings() is SETTINGS``).

    >>> Settings().enable_multi_threading(3)    # before the first intercepted call
    >>> Settings().tid_tag
    '-tid=3'
    """

    _instance: Any = None
    _enabled: bool
    _tid: Any
    _tident: Any

    def __new__(cls) -> Self:
        if cls._instance is None:
            self = super().__new__(cls)
            self._enabled, self._tid, self._tident = False, None, None
            cls._instance = self
        return cls._instance

    def enable_multi_threading(self, thread_id: Any, tident: Any = None) -> None:
        """Names this process's output ``call-monitor-tid=<thread_id>``."""
        self._enabled, self._tid, self._tident = True, thread_id, tident

    def disable_multi_threading(self) -> None:
        """Back to ``call-monitor`` (or the MPI rank's folder)."""
        self._enabled = False

    disbale_multi_threading = disable_multi_threading  # the original's spelling

    @property
    def multi_threading_enabled(self) -> bool:
        return self._enabled

    @property
    def thread_id(self) -> Any:
        return self._tid

    pid = thread_id  # the original's name for it

    @property
    def tident(self) -> Any:
        return self._tident

    @property
    def tid_tag(self) -> str:
        """``-tid=<N>``: the thread id given, else an MPI rank from 1 (rank 0
        and a program without MPI write ``call-monitor`` itself)."""
        if self._enabled:
            return f"-tid={self._tid}" + ("" if self._tident is None else f"-tident={self._tident}")
        rank = mpi_rank()
        return f"-tid={rank}" if rank else ""


def mpi_rank() -> int | None:
    """This process's MPI rank: mpi4py's when the program imported
    ``mpi4py.MPI``, else the launcher's ``OMPI_COMM_WORLD_RANK``, ``PMI_RANK``
    or ``SLURM_PROCID``; None without MPI.  calltape never imports mpi4py
    itself: that would start MPI (and its signal handlers) in a program that
    did not ask for it.  The sessions of the tape name the same rank."""
    return _native.mpi_rank()


def _fresh_folder(base: str) -> str:
    """Creates and returns ``base``, else the first free ``base-N``: made
    with mkdir, so two processes never get the same one."""
    n = 0
    while True:
        path = base if n == 0 else f"{base}-{n}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            n += 1


class Context:
    """Where this process records (one instance: ``Context() is CONTEXT``).

    The folder is chosen when the first intercepted call needs it, reading
    ``Settings`` then; ``CONTEXT.new()`` starts the next folder at once.
    """

    _instance: Any = None
    _folder: str | None
    _armed: bool
    _lock: threading.RLock

    def __new__(cls) -> Self:
        if cls._instance is None:
            self = super().__new__(cls)
            self._folder, self._armed, self._lock = None, False, threading.RLock()
            cls._instance = self
        return cls._instance

    @property
    def initialized(self) -> bool:
        return self._folder is not None

    @property
    def root(self) -> str | None:
        """The output folder (absolute), or None before the first call."""
        return self._folder

    @property
    def tape(self) -> str | None:
        """The tape in the output folder, or None before the first call."""
        return None if self._folder is None else os.path.join(self._folder, TAPE)

    @property
    def db(self) -> DB:
        """The database being recorded (written out first; not locked)."""
        if self._folder is None:
            raise DBNotInitialized("no callmonitor database yet: it is made at the first"
                                   " intercepted call (or CONTEXT.init())")
        calltape.flush()
        return DB(self._folder, locked=False)

    def init(self) -> None:
        """Chooses the output folder now (when not chosen yet) and records into it."""
        calltape.configure(tape=self._choose(fresh=False))

    def new(self) -> None:
        """Writes out the current database and records into a new folder
        (``call-monitor-1``, ...), reading ``Settings`` again."""
        calltape.flush()
        calltape.configure(tape=self._choose(fresh=True))

    def _arm(self) -> None:
        """The first intercepted call will name the tape (configure(tape=namer))."""
        with self._lock:
            if self._folder is None and not self._armed:
                calltape.configure(tape=self._name_tape)
                self._armed = True

    def _name_tape(self) -> str:
        return self._choose(fresh=False)

    def _choose(self, fresh: bool) -> str:
        with self._lock:
            if self._folder is not None and not fresh:
                return os.path.join(self._folder, TAPE)
            tag = Settings().tid_tag
            folder = None
            if self._folder is None:  # a child process joins its parent's folder
                inherited = os.environ.get(_ENV_FOLDER)
                if inherited and os.environ.get(_ENV_TAG) == tag and os.path.isdir(inherited):
                    folder = inherited
            if folder is None:
                folder = _fresh_folder(os.path.abspath(ROOT + tag))
            os.environ[_ENV_FOLDER], os.environ[_ENV_TAG] = folder, tag
            self._folder = folder
            return os.path.join(folder, TAPE)


def _after_fork_in_child() -> None:
    Context()._lock = threading.RLock()  # the parent's may have been held by another thread


os.register_at_fork(after_in_child=_after_fork_in_child)


def intercept(func: F, spec: Any = None) -> F:
    """Records every call of ``func``: its inputs by parameter name (defaults,
    keyword-only, ``*args`` and ``**kwargs`` included), its result and its
    timing, onto the tape of ``call-monitor`` (chosen at the first call)."""
    CONTEXT._arm()
    return calltape.record(func, max_value_bytes=MAX_VALUE_BYTES)


def save_db() -> None:
    """Writes out everything recorded so far (also done at exit)."""
    calltape.flush()


def snapshot() -> None:
    """``CONTEXT.new()`` when a database was started."""
    if CONTEXT.initialized:
        CONTEXT.new()


# ---- handlers: calltape codecs -----------------------------------------------


class Handler:
    """Saves one value of a registered type into files, and loads it back.

    A subclass defines ``save(path)`` (write ``self.data`` into the folder
    ``path``), ``load(path)`` (set ``self.data`` from it) and the classmethod
    ``accumulator_done()``.  At each recorded value of its type (at any depth
    of the inputs, or a result), ``save`` runs into a fresh folder whose files
    are kept on the tape as one value, then ``accumulator_done()``; at
    ``DB.get`` the files are written into a fresh folder and ``load`` reads
    them.  ``target`` is the label the files are named by (0).
    """

    def __init__(self, data: Any, target: Any) -> None:
        self._data = data
        self._target = target

    @property
    def data(self) -> Any:
        return self._data

    @data.setter
    def data(self, val: Any) -> None:
        self._data = val

    @property
    def target(self) -> Any:
        return self._target

    @target.setter
    def target(self, val: Any) -> None:
        self._target = val

    def save(self, path: str) -> None:
        raise NotImplementedError(f"{type(self).__qualname__} must define save(path)")

    def load(self, path: str) -> None:
        raise NotImplementedError(f"{type(self).__qualname__} must define load(path)")

    @classmethod
    def accumulator_done(cls) -> None:
        """Called after each value of this handler's type was saved."""


class DefaultHandler(Handler):
    """calltape's own value format (the types nobody registered)."""

    def save(self, path: str) -> None:
        pass

    def load(self, path: str) -> None:
        pass


class NPHandler(Handler):
    """numpy arrays as ``.npy`` files.  Registered by default, as calltape's
    built-in array codec: the same ``.npy`` bytes, read from the array's
    buffer in C, no file written."""

    def load(self, path: str) -> None:
        import numpy as np

        self.data = np.load(os.path.join(path, f"arg_{self.target}.npy"), allow_pickle=False)

    def save(self, path: str) -> None:
        import numpy as np

        np.save(os.path.join(path, f"arg_{self.target}.npy"), self.data, allow_pickle=False)


def _files_in(folder: str) -> dict[str, bytes]:
    files = {}
    for where, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(where, name)
            with open(full, "rb") as f:
                files[os.path.relpath(full, folder)] = f.read()
    return files


def _put_files(folder: str, files: Mapping[str, bytes], codec: str) -> None:
    for rel, content in files.items():
        norm = os.path.normpath(rel)
        if not isinstance(content, bytes) or os.path.isabs(norm) or norm.split(os.sep)[0] in (
                "..", "."):
            raise ValueError(f"the files of codec {codec!r} name {rel!r}, not a path inside"
                             " its folder")
        full = os.path.join(folder, norm)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(content)


def _codec(handler: type[Handler]) -> tuple[str, Callable[[Any], bytes], Callable[[bytes], Any]]:
    """The calltape codec of a Handler class: its files as one tape value."""
    name = f"callmonitor:{handler.__module__}.{handler.__qualname__}"

    def encode(value: Any) -> bytes:
        with tempfile.TemporaryDirectory(prefix="calltape-callmonitor-") as folder:
            handler(value, 0).save(folder)
            files = _files_in(folder)
        handler.accumulator_done()
        return _native.encode({"target": 0, "files": files})

    def decode(data: bytes) -> Any:
        saved = _native.decode(data)
        with tempfile.TemporaryDirectory(prefix="calltape-callmonitor-") as folder:
            _put_files(folder, saved["files"], name)
            h = handler(None, saved["target"])
            h.load(folder)
            return h.data

    return name, encode, decode


def _is_ndarray(t: type) -> bool:
    return t.__module__ == "numpy" and t.__qualname__ == "ndarray"


class Registry:
    """Which Handler saves the values of each type (one instance:
    ``Registry() is REGISTRY``).  ``REGISTRY.add(type, Handler)`` applies from
    the next recorded call on, and must be done before ``DB.get`` reads such
    values back."""

    _instance: Any = None
    _registry: dict[type, type[Handler]]

    def __new__(cls) -> Self:
        if cls._instance is None:
            self = super().__new__(cls)
            self._registry = {}
            cls._instance = self
        return cls._instance

    def add(self, target: type, method: type[Handler]) -> None:
        """Values of ``target`` (and its subclasses) are saved by ``method``."""
        if not isinstance(target, type):
            raise TypeError(f"REGISTRY.add needs a type to handle, not {target!r}")
        if not (isinstance(method, type) and issubclass(method, Handler)):
            raise TypeError(f"REGISTRY.add needs a Handler subclass for {target!r},"
                            f" not {method!r}")
        if method is DefaultHandler or (method is NPHandler and _is_ndarray(target)):
            _native.unregister_codec(target)  # calltape's own format
        else:
            calltape.register_codec(target, *_codec(method))
        self._registry[target] = method

    def accumulator_done(self) -> None:
        """``accumulator_done()`` of every registered handler."""
        for target in self:
            self[target].accumulator_done()

    def __getitem__(self, target: type) -> type[Handler]:
        return self._registry.get(target, DefaultHandler)

    def __contains__(self, target: object) -> bool:
        return target in self._registry

    def __iter__(self) -> Iterator[type]:
        return iter(list(self._registry))

    def __str__(self) -> str:
        return "{\n" + "".join(f"    {k}: {v}\n" for k, v in self._registry.items()) + "}"

    __repr__ = __str__


# ---- reading -----------------------------------------------------------------


class Args:
    """A call's inputs by parameter name, defaults filled in: ``args.x``.

    >>> args = db.get_args("test_fn_1", 1)
    >>> args
    dict_keys(['x', 'y', 'z'])
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return repr(self.__dict__.keys())

    __str__ = __repr__


def _tape_in(root: str | os.PathLike[str]) -> str:
    path = os.fspath(root)
    if os.path.isdir(path):
        tape = os.path.join(path, TAPE)
        if os.path.exists(tape):
            return tape
        if os.path.exists(os.path.join(path, "db.pkl")):
            raise FileNotFoundError(f"{path} holds a database of the original callmonitor"
                                    f" (db.pkl), not a calltape tape ({TAPE})")
        raise FileNotFoundError(f"no callmonitor database in {path}: it holds no {TAPE}")
    if os.path.exists(path):
        return path
    raise FileNotFoundError(f"no callmonitor database at {path}")


def _in_signature_order(fn: calltape.Function) -> list[str]:
    """The parameter names as the ``def`` line has them (the tape keeps
    ``*args`` after the keyword-only ones)."""
    return [name for _, name in sorted(zip(fn.kinds, fn.parameters), key=lambda kn: kn[0])]


class DB:
    """A callmonitor database: the tape in a ``call-monitor`` folder."""

    def __init__(self, root: str | os.PathLike[str] = ROOT, *, locked: bool = True,
                 trust: bool = False, allow: Sequence[str] = ()) -> None:
        if CONTEXT.initialized:
            calltape.flush()  # what this process recorded so far is read too
        self.root = os.fspath(root)
        self.path = _tape_in(root)
        self._locked = locked
        self.tape = calltape.open(self.path, trust=trust, allow=tuple(allow))

    @property
    def locked(self) -> bool:
        """True for a database loaded to read (``load``)."""
        return self._locked

    @property
    def version(self) -> str:
        return calltape.__version__

    def functions(self) -> dict[str, calltape.Function]:
        """The recorded functions by ``module.qualname``, in the order first recorded."""
        out: dict[str, calltape.Function] = {}
        for fn in self.tape.functions():
            out.setdefault(f"{fn.module}.{fn.qualname}", fn)
        return out

    def _calls_of(self, fn: calltape.Function) -> int:
        return sum(f.calls for f in self.tape.functions()
                   if f.module == fn.module and f.qualname == fn.qualname)

    def _resolve(self, name: str) -> calltape.Function:
        """The function ``name`` names: its ``module.qualname``, its qualname,
        or the last part of its qualname, when only one function has it."""
        functions = self.functions()
        for match in (lambda full, fn: full == name,
                      lambda full, fn: fn.qualname == name,
                      lambda full, fn: fn.qualname.rsplit(".", 1)[-1] == name):
            found = [full for full, fn in functions.items() if match(full, fn)]
            if len(found) == 1:
                return functions[found[0]]
            if found:
                raise AmbiguousName(f"{name!r} names {len(found)} functions on {self.path}: "
                                    f"{', '.join(found)}; give one of these names")
        names = list(functions)
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise CallNotLogged(f"no function {name!r} on {self.path} (its functions: "
                            f"{shown or 'none'})")

    def call(self, name: str, call_seq: int) -> calltape.Call:
        """The ``call_seq``-th call (from 1) of ``name`` as calltape has it:
        result, duration, thread, session, ..."""
        if isinstance(call_seq, bool) or not isinstance(call_seq, int):
            raise TypeError(f"the invocation count must be an int from 1, not {call_seq!r}")
        if call_seq < 1:
            raise ValueError(f"invocation counts start at 1 (the first call of {name} is"
                             f" get({name!r}, 1)), not {call_seq}")
        fn = self._resolve(name)
        module, qualname = fn.module, fn.qualname
        found = self.tape.search(lambda f: f.module == module and f.qualname == qualname,
                                 order="oldest", limit=call_seq)
        if len(found) < call_seq:
            n = self._calls_of(fn)
            raise CallNotLogged(f"{module}.{qualname} was called {n} time{'s' * (n != 1)} on"
                                f" {self.path}: there is no call {call_seq}")
        return found[call_seq - 1]

    def get(self, name: str, call_seq: int) -> tuple[list[Any], dict[str, Any]]:
        """``(args, kwargs)`` of the ``call_seq``-th call (from 1) of ``name``:
        ``name(*args, **kwargs)`` makes the same call again (the parameters
        before the first one left to its default by position, ``*args``
        included; the others, keyword-only and ``**kwargs`` ones by keyword)."""
        bound = self.call(name, call_seq).bound
        return list(bound.args), dict(bound.kwargs)

    def get_args(self, name: str, call_seq: int) -> Args:
        """The ``call_seq``-th call's inputs by parameter name, defaults filled in."""
        c = self.call(name, call_seq)
        values = c.args
        return Args({p: values[p] for p in _in_signature_order(c.func) if p in values})

    def close(self) -> None:
        self.tape.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __str__(self) -> str:
        functions = self.functions()
        qualnames = [fn.qualname for fn in functions.values()]
        lines = ["{", f"    Locked: {self.locked}"]
        for full, fn in functions.items():
            label = fn.qualname if qualnames.count(fn.qualname) == 1 else full
            lines += [f"    {label}: {{", f"        calls: {self._calls_of(fn)}",
                      f"        args: {_in_signature_order(fn)}",
                      *(f"        {line}" for line in _defaults_lines(fn)), "    }"]
        return "\n".join([*lines, "}"])

    __repr__ = __str__


def _defaults_lines(fn: calltape.Function) -> list[str]:
    """``defaults: (2, 3)`` as FullArgSpec has them (None when there are
    none), and the keyword-only ones when there are."""
    try:
        given = fn.defaults
    except (calltape.RefusedGlobal, calltape.TapeError, ImportError) as e:
        return [f"defaults: <not rebuilt: {e}>"]
    kinds = dict(zip(fn.parameters, fn.kinds))
    positional = tuple(v for p, v in given.items() if kinds.get(p, 1) <= 1)
    keyword = {p: v for p, v in given.items() if kinds.get(p) == 3}
    return [f"defaults: {positional or None}", *([f"kwonlydefaults: {keyword}"] * bool(keyword))]


def load(root: str | os.PathLike[str] = ROOT, *, trust: bool = False,
         allow: Sequence[str] = ()) -> DB:
    """The database in the folder ``root`` (or the tape file itself), locked.
    Values of your own classes rebuild when their module is allowed
    (``allow=["mypkg"]``) or the tape trusted (``trust=True``)."""
    return DB(root, locked=True, trust=trust, allow=allow)


REGISTRY = Registry()
SETTINGS = Settings()
CONTEXT = Context()
if importlib.util.find_spec("numpy") is not None:  # callmonitor's own dependency
    import numpy as _np

    REGISTRY.add(_np.ndarray, NPHandler)
