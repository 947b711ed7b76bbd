"""calltape's pytest plugin (registered through the ``pytest11`` entry point).

A top-level module, not ``calltape.pytest_plugin``: importing anything under
``calltape`` runs its ``__init__`` and loads the C engine.  Here nothing of
calltape is imported until a flag or a ``calltape`` marker asks for it, so a
suite without them runs as it did.

- ``pytest --calltape[=TAPE]`` records the project's code (the rootdir, as
  ``calltape run -m pytest`` does) with the ``calltape run`` options;
- ``@pytest.mark.calltape(include=[...])`` records one test (or a module);
- the ``calltape_tape`` fixture holds the calls recorded so far in the test;
- a failed test's report gets a section with its recorded calls that raised;
- ``pytest --calltape-replay TAPE --calltape-trust`` collects recorded calls
  as items, one per call, replayed by ``Tape.replay`` (the C Replayer).

A test's calls are those of this process's session that started between the
test's setup and its teardown (threads the test started included), less the
time spent setting up or tearing down fixtures of a wider scope (class,
module, package, session), whose calls belong to no test.  The plugin writes
that time onto the tape as the test's spans (``_native.Context``, named by
the node id: two records per span, nothing per call), which
``Tape.search(test=)`` and ``Call.test`` read.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_STATE = pytest.StashKey["_Recording"]()
_SECTION_CALLS = 5  # calls that raised shown in a failure section
_SECTION_VALUE = 120  # characters of each argument shown there


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("calltape", "calltape: record calls during tests, replay recordings")
    g.addoption("--calltape", nargs="?", const="", default=None, metavar="TAPE",
                help="record the project's calls onto TAPE (default: $CALLTAPE_TAPE or"
                     " ./calltape.db), each tagged with its test")
    g.addoption("--calltape-fresh", action="store_true", help="start a new tape")
    g.addoption("--calltape-include", action="append", default=[], metavar="PKG",
                help="also record this package or module")
    g.addoption("--calltape-exclude", action="append", default=[], metavar="PATTERN",
                help="do not record modules or module.qualname globs")
    g.addoption("--calltape-no-args", action="store_true", help="do not record arguments")
    g.addoption("--calltape-no-result", action="store_true", help="do not record return values")
    g.addoption("--calltape-cpu", action="store_true", help="record thread CPU time")
    g.addoption("--calltape-max-depth", type=int, default=0, metavar="N",
                help="record no call nested deeper than N recorded calls")
    g.addoption("--calltape-sample", type=int, default=1, metavar="N",
                help="record one call in N of each function")
    g.addoption("--calltape-max-value-bytes", type=int, default=4096, metavar="N")
    g.addoption("--calltape-replay", default=None, metavar="TAPE",
                help="collect the recorded calls of TAPE as tests and replay them")
    g.addoption("--calltape-function", default=None, metavar="F",
                help="replay only calls of F (qualname, module.qualname or a glob)")
    g.addoption("--calltape-since", default=None, metavar="WHEN",
                help="replay only calls since WHEN (ISO time or 10m, 2h, 3d)")
    g.addoption("--calltape-limit", type=int, default=None, metavar="N",
                help="replay at most N calls")
    g.addoption("--calltape-trust", action="store_true",
                help="replay may rebuild any recorded value (replay runs code)")
    g.addoption("--calltape-allow", action="append", default=[], metavar="MODULE",
                help="replay may rebuild values of MODULE's types")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "calltape(include=None, record=True): record this test's calls with calltape")
    opt = config.option
    if opt.calltape_replay is not None:
        if not (opt.calltape_trust or opt.calltape_allow):
            raise pytest.UsageError(
                "--calltape-replay runs recorded calls: give --calltape-trust or"
                " --calltape-allow MODULE")
        config.pluginmanager.register(_Replay(config), "calltape-replay")
    if opt.calltape is not None:
        rec = _Recording(config)
        config.stash[_STATE] = rec
        config.pluginmanager.register(rec, "calltape-recording")
        rec.start()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The per-test hooks are registered only when something records: a suite
    without --calltape and without a calltape marker runs no hook of ours per test."""
    if config.pluginmanager.has_plugin("calltape-tests"):
        return
    if config.stash.get(_STATE, None) is not None or any(
            item.get_closest_marker("calltape") is not None for item in items):
        config.pluginmanager.register(_PerTest(), "calltape-tests")


def pytest_unconfigure(config: pytest.Config) -> None:
    rec = config.stash.get(_STATE, None)
    if rec is not None:
        rec.stop()


# -- recording ------------------------------------------------------------------------------


class _Recording:
    """One process's recording: the monitor, and when each test ran."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        opt = config.option
        self.tape = os.path.abspath(opt.calltape or _default_tape())
        self.controller = _xdist_controller(config)
        self.worker = hasattr(config, "workerinput")
        self.monitor: Any = None
        self.sessions: list[int] = []  # the workers' sessions (the controller)
        self.began: float = 0.0  # when the current test's setup began (time.time())
        self.span: Any = None  # the running test's _native.Context, while one runs
        self.wider = 0  # fixtures of a wider scope being set up (the span paused)
        self.teardown_end: int | None = None  # tearing down: where the test's part ends
        self.wider_torn = False  # ... and a wider fixture was torn down since

    def options(self) -> dict[str, Any]:
        opt = self.config.option
        return {"include": list(opt.calltape_include), "exclude": list(opt.calltape_exclude),
                "paths": [str(self.config.rootpath) + os.sep],
                "args": not opt.calltape_no_args, "result": not opt.calltape_no_result,
                "cpu": opt.calltape_cpu, "max_depth": opt.calltape_max_depth,
                "sample": opt.calltape_sample, "max_value_bytes": opt.calltape_max_value_bytes,
                "max_value_depth": 20}

    def start(self) -> None:
        from calltape import _native, _run, configure

        if not os.path.isdir(os.path.dirname(self.tape)):
            raise pytest.UsageError(f"cannot write the tape {self.tape}: the folder"
                                    f" {os.path.dirname(self.tape)} does not exist")
        try:
            _native.check_writable(self.tape)
            if self.config.option.calltape_fresh and not self.worker:
                _run._remove_tape(self.tape)
        except Exception as exc:  # noqa: BLE001 - TapeError, RunError: one sentence
            raise pytest.UsageError(str(exc)) from None
        if self.controller:
            return  # the workers record, each as its own session
        configure(tape=self.tape)
        from calltape._monitor import monitor

        self.monitor = monitor(**self.options())
        self.monitor.start()

    def pytest_sessionfinish(self) -> None:
        if self.worker and self.monitor is not None:  # sent to the controller after this hook
            self.config.workeroutput["calltape_session"] = self.session()

    def stop(self) -> None:
        from calltape import flush

        if self.span is not None:  # interrupted inside a test
            self.span.end()
            self.span = None
        if self.monitor is not None and self.monitor.running:
            self.monitor.stop()
            flush()

    def session(self) -> int:
        from calltape import flush, stats

        flush()
        return int(stats()["session"])

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        self.began = time.time()
        item.stash[_BEGAN] = self.began
        if self.monitor is not None:
            from calltape import _native

            self.span = _native.Context(item.nodeid)
            self.span.begin()
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Iterator[None]:
        """A fixture of a wider scope is set up outside the test's span."""
        wider = self.span is not None and fixturedef.scope != "function"
        if wider:
            self.wider += 1
            if self.wider == 1:
                self.span.end()
        yield
        if wider:
            self.wider -= 1
            if self.wider == 0:
                self.span.begin()

    def pytest_fixture_post_finalizer(self, fixturedef: Any) -> None:
        """Tearing down: the test's part ends after its own fixtures' teardown,
        before the first of a wider scope (which pytest tears down after them)."""
        if self.teardown_end is None or self.wider_torn:
            return
        if fixturedef.scope == "function":
            self.teardown_end = time.monotonic_ns()  # the clock of the calls' starts
        else:
            self.wider_torn = True

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        self.teardown_end, self.wider_torn = time.monotonic_ns(), False
        yield
        if self.span is not None:
            self.span.end(at=self.teardown_end if self.wider_torn else None)
            self.span = None
        self.teardown_end = None

    @pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: unknown without it
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        out = getattr(node, "workeroutput", {})
        if out.get("calltape_session"):
            self.sessions.append(out["calltape_session"])

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.worker:
            return
        from calltape import _native, stats

        if self.controller:
            calls = functions = 0
            if self.sessions:
                with _native.Tape(self.tape) as t:
                    fns = t.functions(session=sorted(self.sessions))
                calls, functions = sum(f.calls for f in fns), len(fns)
            where = f" in {len(self.sessions)} worker sessions"
        else:
            from calltape import _run

            calls, _, _, _, functions = _run._with_children(self.tape, {**stats(),
                                                                       "session": self.session()})
            where = ""
        terminalreporter.write_line(
            f"calltape: recorded {_count(calls, 'call')} of {_count(functions, 'function')}"
            f" onto {self.tape}{where} (see: calltape functions --last {self.tape})")


_BEGAN = pytest.StashKey[float]()
_MARKED = pytest.StashKey[Any]()


def _default_tape() -> str:
    return os.environ.get("CALLTAPE_TAPE") or os.path.join(os.getcwd(), "calltape.db")


def _xdist_controller(config: pytest.Config) -> bool:
    """True in pytest-xdist's controller process when it runs workers."""
    if hasattr(config, "workerinput"):
        return False
    n = getattr(config.option, "numprocesses", None)
    return bool(n) and getattr(config.option, "dist", "no") != "no"


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


@pytest.hookimpl(hookwrapper=True)
def _runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test marked ``calltape`` is recorded without --calltape (its own monitor)."""
    mark = item.get_closest_marker("calltape")
    rec = item.config.stash.get(_STATE, None)
    if mark is None or (rec is not None and rec.monitor is not None) or not mark.kwargs.get(
            "record", True):
        yield
        return
    from calltape import _native
    from calltape._monitor import monitor

    include = mark.kwargs.get("include") or ()
    include = [include] if isinstance(include, str) else list(include)
    paths = [] if include else [str(item.config.rootpath) + os.sep]
    m = monitor(include, paths=paths)
    item.stash.setdefault(_BEGAN, time.time())
    item.stash[_MARKED] = m
    span = _native.Context(item.nodeid)
    span.begin()
    m.start()
    try:
        yield
    finally:
        m.stop()
        span.end()
        _native.flush()


class TestCalls:
    """The calls recorded so far in the running test (the ``calltape_tape`` fixture).

    >>> def test_total(calltape_tape):
    ...     total(cart)
    ...     assert calltape_tape.calls("price")[0].args["qty"] == 3
    """

    __test__ = False  # not a test class for pytest

    def __init__(self, tape: str, began: float, test: str) -> None:
        self.path, self.began, self.test = tape, began, test
        self._tape: Any = None  # opened on first use, closed at the test's teardown

    def close(self) -> None:
        if self._tape is not None:
            self._tape.close()
            self._tape = None

    def calls(self, function: str | None = None, **filters: Any) -> list[Any]:
        """The calls of this test so far, oldest first (``function`` and the
        filters of ``Tape.search``): this process's calls within the test's
        spans since it began (a rerun's own)."""
        from calltape import _native

        _native.flush()
        session = int(_native.stats()["session"])
        if not session:
            return []
        if self._tape is None:
            self._tape = _native.Tape(self.path)
        filters.setdefault("order", "oldest")
        return list(self._tape.search(function, session=session, since=self.began,
                                      test=self.test, **filters))


@pytest.fixture
def calltape_tape(request: pytest.FixtureRequest) -> Iterator[TestCalls]:
    """The calls recorded so far in this test (needs --calltape or the calltape marker)."""
    rec = request.config.stash.get(_STATE, None)
    if rec is None and request.node.get_closest_marker("calltape") is None:
        pytest.fail("calltape_tape needs --calltape or @pytest.mark.calltape", pytrace=False)
    began = request.node.stash.get(_BEGAN, None) or time.time()
    request.node.stash[_BEGAN] = began
    from calltape import _native

    calls = TestCalls(rec.tape if rec is not None else _native.default_tape(), began,
                      request.node.nodeid)
    yield calls
    calls.close()


@pytest.hookimpl(hookwrapper=True)
def _makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    rec = item.config.stash.get(_STATE, None)
    if report.when != "call" or not report.failed or rec is None or rec.monitor is None:
        return
    try:
        report.sections.append(("calltape: calls that raised", _raised_section(item, rec)))
    except Exception as exc:  # noqa: BLE001 - the report must not fail on our account
        report.sections.append(("calltape: calls that raised", f"(cannot read the tape: {exc})"))


def _raised_section(item: pytest.Item, rec: _Recording) -> str:
    from calltape import _native

    began = item.stash.get(_BEGAN, rec.began)
    session = rec.session()
    with _native.Tape(rec.tape) as t:
        return _raised_lines(t, rec.tape, session, began, item.nodeid)


def _raised_lines(t: Any, path: str, session: int, began: float, test: str) -> str:
    from calltape.cli import cut_middle

    raised = list(t.search(session=session, since=began, test=test, outcome="raised",
                           order="oldest", limit=_SECTION_CALLS + 1))
    lines = []
    for c in raised[:_SECTION_CALLS]:
        try:
            args = ", ".join(f"{k}={cut_middle(repr(v), _SECTION_VALUE)}"
                             for k, v in c.args.items())
        except Exception as exc:  # noqa: BLE001 - a value that cannot be rebuilt here
            args = f"<{type(exc).__name__}>"
        exc = c.exception
        raised_text = cut_middle(repr(exc), _SECTION_VALUE) if exc is not None else "an exception"
        lines.append(f"call {c.id} {c.function}({args}) raised {raised_text}")
    if len(raised) > _SECTION_CALLS:
        lines.append("... and more")
    if not lines:
        lines.append("no recorded call of this test raised")
    lines.append(f"see all of them: calltape search {shlex.quote(path)} --test"
                 f" {shlex.quote(test)} --session {session} --order oldest")
    return "\n".join(lines)


# -- replay ---------------------------------------------------------------------------------


class _Replay:
    """Collects a tape's recorded calls as items (instead of the test files)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> bool:
        from calltape import _native
        from calltape.cli import parse_time

        opt = self.config.option
        try:
            tape = _native.Tape(opt.calltape_replay, trust=opt.calltape_trust,
                                allow=tuple(opt.calltape_allow))
        except Exception as exc:  # noqa: BLE001 - TapeError and OSError: one sentence
            raise pytest.UsageError(f"--calltape-replay: {exc}") from None
        filters: dict[str, Any] = {"order": "oldest", "limit": opt.calltape_limit}
        if opt.calltape_since:
            filters["since"] = parse_time(opt.calltape_since)
        calls = list(tape.search(opt.calltape_function, **filters))
        parent = ReplayTape.from_parent(session, name=os.path.basename(opt.calltape_replay),
                                        path=Path(os.path.abspath(opt.calltape_replay)))
        items = [ReplayItem.from_parent(parent, name=f"{c.module}.{c.qualname}[{c.id}]",
                                        tape=tape, call_id=c.id) for c in calls]
        hook = self.config.hook
        hook.pytest_collectreport(report=pytest.CollectReport(
            parent.nodeid, "passed", None, list(items)))
        hook.pytest_collection_modifyitems(session=session, config=self.config, items=items)
        hook.pytest_collection_finish(session=session)
        session.items = items
        session.testscollected = len(items)
        return True


class ReplayTape(pytest.File):
    """The tape being replayed: the parent of its calls' items."""

    def collect(self) -> list[pytest.Item]:
        return []  # its items are made by _Replay.pytest_collection


class ReplayFailed(Exception):
    """A recorded call that changed or failed when replayed (its diff)."""


class ReplayItem(pytest.Item):
    """One recorded call, replayed: passed, failed (the diff) or skipped (the reason)."""

    def __init__(self, *, tape: Any, call_id: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tape, self.call_id = tape, call_id

    def runtest(self) -> None:
        outcome = self.tape.replay(self.call_id)[0]
        if outcome.status == "skipped":
            raise pytest.skip.Exception(outcome.reason or "not replayed", _use_item_location=True)
        if outcome.status != "passed":
            path = self.config.option.calltape_replay
            raise ReplayFailed(f"{outcome.status}: {outcome.diff or outcome.reason or ''}"
                               f"\n(see: calltape show {path} {self.call_id})")

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, ReplayFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, 0, f"call {self.call_id}"


class _PerTest:
    """The hooks run for every test while something records."""

    pytest_runtest_call = staticmethod(_runtest_call)
    pytest_runtest_makereport = staticmethod(_makereport)
