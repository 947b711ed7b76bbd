"""Shared fixtures for the calltape recording tests.

Every in-process test gets its own tape through the ``tape`` fixture, which
points calltape at ``tmp_path / "t.db"`` and flushes at teardown.  Tests that
need fresh process state (warnings issued once, global configuration, exit
paths, signals) run a child interpreter with ``_util.run_python``.
"""

import faulthandler
import os
import signal
import sys

import pytest

# The helper modules (_util, _workers) live beside this file.  Put the folder
# on sys.path explicitly so that they import under any pytest import mode and
# so that multiprocessing "spawn" children (which inherit sys.path) find them.
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import calltape

# Started in the background by a shell without job control (`pytest &`), the
# run inherits Ctrl-C ignored, and so would the children it starts: the tests
# of Ctrl-C would wait for an interrupt that never comes.  Give it back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# A test that hangs (a deadlock in the engine, say) must fail, not stall the
# run: after this many seconds every thread's traceback is printed and the
# test process exits.
WATCHDOG_SECONDS = 120


def _uncaptured_stderr_fd(config):
    """The terminal's stderr, not pytest's capture file (lost at exit)."""
    try:
        capman = config.pluginmanager.getplugin("capturemanager")
        return capman._global_capturing.err.targetfd_save
    except Exception:
        return sys.__stderr__.fileno()


@pytest.fixture(autouse=True)
def _watchdog(request):
    fd = _uncaptured_stderr_fd(request.config)
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True, file=fd)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def tape(tmp_path):
    """A fresh tape for this test; calltape records into it."""
    path = tmp_path / "t.db"
    calltape.configure(tape=path)
    yield path
    calltape.flush(timeout=30)


@pytest.fixture
def stats_delta():
    """Returns a function giving the change of calltape.stats() counters."""
    before = dict(calltape.stats())

    def delta(name):
        calltape.flush(timeout=30)
        return calltape.stats()[name] - before[name]

    return delta

# the pytest plugin's tests (tests/pytest_plugin) run pytest sessions in subprocesses
pytest_plugins = ("pytester",)
