"""``calltape run``: run a Python program as ``python`` would, recording its
calls with :func:`calltape.monitor`.

The program sees the same ``sys.argv``, ``__name__ == "__main__"``,
``sys.path[0]``, exit status, streams and exceptions as under plain
``python``.  Child processes inherit the recording through CALLTAPE_MONITOR
and the ``_bootstrap`` sitecustomize on PYTHONPATH.
"""

from __future__ import annotations

import atexit
import builtins
import importlib.util
import json
import os
import runpy
import signal
import sys
import traceback
from typing import Any

from . import _native, configure, flush, stats
from ._monitor import monitor

_HERE = os.path.dirname(os.path.abspath(__file__))


class RunError(Exception):
    """The program or the tape cannot be used: the message says which and why."""


def _trim(tb: Any) -> Any:
    """The traceback without calltape's and runpy's own frames at its top."""
    while tb is not None and (tb.tb_frame.f_code.co_filename.startswith(_HERE)
                              or tb.tb_frame.f_code.co_filename == runpy.__file__):
        tb = tb.tb_next
    return tb


def _exec_script(target: str) -> None:
    """Runs a script file as ``python target`` does: a fresh ``__main__``
    module whose ``__file__`` and code filename are absolute, ``sys.argv[0]``
    as given."""
    path = os.path.abspath(target)
    if not os.path.isfile(path):  # a directory or zip with __main__.py
        runpy.run_path(path, run_name="__main__")
        return
    import importlib.machinery
    import io
    import types

    main = types.ModuleType("__main__")
    loader = importlib.machinery.SourceFileLoader("__main__", path)
    main.__dict__.update(__file__=path, __cached__=None, __loader__=loader,
                         __builtins__=builtins)
    with io.open_code(path) as f:
        code = compile(f.read(), path, "exec")
    sys.modules["__main__"] = main
    exec(code, main.__dict__)  # noqa: S102 - running the user's program is the point


def _export(spec: dict[str, Any]) -> None:
    os.environ["CALLTAPE_MONITOR"] = json.dumps(spec)
    boot = os.path.join(_HERE, "_bootstrap")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = boot + (os.pathsep + old if old else "")


def _with_children(tape: str, s: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """This run's calls on the tape, written by this process and the child
    processes below it (sessions whose parent chain leads to this one), the
    calls dropped, how many child sessions, how many calls they wrote, and
    the functions those calls are of (decorated ones included), all read
    from the tape's per-session totals (this process's own counts when the
    tape cannot be read)."""
    calls, lost = s["written"], s["dropped"]
    try:
        t = _native.Tape(tape)
    except Exception:  # noqa: BLE001 - the summary is best effort; the tape says why
        return calls, lost, 0, 0, s["functions"]
    with t:
        if not s["session"]:
            return calls, lost, 0, 0, s["functions"]
        sessions = t.sessions()
        mine = {s["session"]}
        grew = True
        while grew:
            below = {x.id for x in sessions if x.parent in mine} - mine
            grew = bool(below)
            mine |= below
        children = sorted(mine - {s["session"]})
        fns = t.functions(session=sorted(mine))
        in_children = (sum(f.calls for f in t.functions(session=children)) if children else 0)
        lost += sum(x.counters["dropped"] for x in sessions if x.id in children)
    return sum(f.calls for f in fns), lost, len(children), in_children, len(fns)


def _remove_tape(tape: str) -> None:
    """Removes the tape and its write-ahead log and index (--fresh)."""
    for path in (tape, tape + "-wal", tape + "-shm"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RunError(f"cannot start a fresh tape: cannot remove {path}"
                           f" ({exc.strerror})") from None


def redact(tape: str) -> str:
    """`tape` as messages show it: a URL's password (postgresql://u:PW@...,
    ?password=PW) replaced by ***, as the engine's store_redact does."""
    import re

    tape = re.sub(r"(://[^/?#@]*?:)[^/?#]*@", r"\1***@", tape, count=1)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", tape)


def _count(n: int, word: str) -> str:
    """``_count(1, "call")`` is "1 call", ``_count(6001, "call")`` "6,001 calls"."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def run(target: str, *, module: bool, argv: list[str], tape: str | None = None,
        include: list[str] | None = None, exclude: list[str] | None = None,
        args: bool = True, result: bool = True, cpu: bool = False, memory: bool = False,
        energy: bool = False, locals: bool = False, globals: bool = False, max_depth: int = 0,
        sample: int = 1, max_value_bytes: int = 4096, max_value_depth: int = 20,
        summary: bool = True, fresh: bool = False) -> int:
    """Run ``target`` (a script path, or a module name when ``module``) under
    a monitor; returns its exit status (SystemExit passes through).  With
    ``fresh`` the tape starts empty (the old one is removed) instead of
    keeping the runs before.

    >>> run("shop.py", module=False, argv=["--days", "3"])
    """
    include = list(include or ())
    paths: list[str] = []

    def add_path(path: str, folder: bool) -> None:
        path = os.path.abspath(path)  # monitor() adds its real path too
        paths.append(path.rstrip(os.sep) + os.sep if folder else path)

    saved_path0 = sys.path[0]
    if module:
        sys.path[0] = os.getcwd()  # as `python -m`: modules of the current folder
        try:
            spec = importlib.util.find_spec(target)
            if spec is not None and spec.submodule_search_locations is not None:
                spec = importlib.util.find_spec(target + ".__main__")  # a package
        except (ImportError, ValueError) as exc:
            sys.path[0] = saved_path0
            raise RunError(f"cannot find module {target!r}: {exc}") from None
        if spec is None:
            sys.path[0] = saved_path0
            raise RunError(f"no module named {target!r}")
        include.append(target.partition(".")[0])
        if spec.origin and os.path.isfile(spec.origin):
            add_path(spec.origin, folder=False)
        # the project `python -m` runs in: `calltape run -m pytest` records the
        # code and tests of the current folder (installed and standard code
        # below it stays out, as everywhere)
        add_path(os.getcwd(), folder=True)
    else:
        if not os.path.exists(target):
            raise RunError(f"cannot open the script {target!r}: no such file")
        if os.path.isdir(target) and not os.path.isfile(os.path.join(target, "__main__.py")):
            raise RunError(f"cannot run the folder {target!r}: it has no __main__.py"
                           " (name a script in it, or a package with -m)")
        add_path(target if os.path.isdir(target) else os.path.dirname(os.path.abspath(target)),
                 folder=True)
    tape = tape or _native.default_tape()
    url = "://" in tape  # a server's URL (postgresql://...): no folder to check
    tape = tape if url else os.path.abspath(tape)
    if not url and not os.path.isdir(os.path.dirname(tape)):
        raise RunError(f"cannot write the tape {tape}: the folder {os.path.dirname(tape)}"
                       " does not exist")
    _native.check_writable(tape)  # TapeError: not a tape, newer, damaged or unwritable
    if fresh and url:
        raise RunError("--fresh removes a tape file; a PostgreSQL tape is kept (drop its"
                       " tables to start afresh)")
    if fresh:
        _remove_tape(tape)
    configure(tape=tape)
    options = {"include": include, "exclude": list(exclude or ()), "paths": paths,
               "args": args, "result": result, "cpu": cpu, "memory": memory, "energy": energy,
               "locals": locals, "globals": globals,
               "max_depth": max_depth, "sample": sample, "max_value_bytes": max_value_bytes,
               "max_value_depth": max_value_depth}
    _export(options)  # the same monitor in child processes
    mon = monitor(**options)

    parent = os.getpid()

    def finish() -> None:
        # The monitor keeps running: calls after this line (exit handlers
        # registered before it, __del__ at teardown) go onto the tape too.
        if not mon.running:
            return
        flush()
        if os.getpid() != parent:
            return  # a forked child that exits normally: the parent's line counts it
        if summary:
            s = stats()
            calls, lost, nchildren, in_children, functions = _with_children(tape, s)
            dropped = f", {lost:,} dropped" if lost else ""
            kids = (f" ({in_children:,} of them in {nchildren:,} child process"
                    f"{'es' if nchildren > 1 else ''})" if nchildren else "")
            shown = redact(tape)
            # the functions of the calls written, decorated ones included
            print(f"calltape: recorded {_count(calls, 'call')} of {_count(functions, 'function')}"
                  f" onto {shown}{kids}{dropped} (see: calltape functions --last {shown})",
                  file=sys.stderr)

    # after the program's non-daemon threads ended, before calltape's own exit hook
    atexit.register(finish)
    sys.argv = [target, *argv]
    if module:
        sys.path[0] = os.getcwd()
    else:
        sys.path[0] = os.path.dirname(os.path.abspath(target))
    _native._begin_session(None)  # the parent session of every child, whenever it starts
    mon.start()
    try:
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            _exec_script(target)
    except SystemExit:
        raise
    except KeyboardInterrupt as exc:
        # as python does: the traceback, the program's exit handlers (and
        # ours), then death by SIGINT for the exit status
        traceback.print_exception(type(exc), exc, _trim(exc.__traceback__))
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException as exc:  # noqa: BLE001 - reported as python would
        tb = _trim(exc.__traceback__)
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        return 1
    return 0

