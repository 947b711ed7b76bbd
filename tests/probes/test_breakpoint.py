"""calltape.testing.Breakpoint under real threads."""

import threading
import time

import probe_subjects as S
import pytest

from calltape.testing import Breakpoint


def test_pauses_until_released():
    done = threading.Event()

    def run():
        S.Cart.add(1, 2)
        done.set()

    with Breakpoint("probe_subjects.Cart.add") as bp:
        bp.start_thread(run)
        bp.wait()
        assert bp.hits == 1 and bp.stackframe.f_locals["a"] == 1
        time.sleep(0.05)
        assert not done.is_set()  # paused
        bp.release()
        assert done.wait(5)
    assert bp.errors == []


def test_condition_and_hits_across_threads():
    with Breakpoint(S.Cart.add, condition="a > 10", timeout=5) as bp:
        for i in (1, 20, 30):
            bp.start_thread(S.Cart.add, i, 0)
        bp.wait(hits=2)
        assert bp.hits == 2 and bp.calls == 3
        bp.release()


def test_return_event_sees_result():
    with Breakpoint(S.Cart.add, event="return", condition=lambda ns: ns["result"] == 5) as bp:
        bp.start_thread(S.Cart.add, 2, 3)
        bp.wait()
        assert bp.stackframe.f_code.co_name == "add"


def test_timeout_names_the_target():
    with Breakpoint("probe_subjects.Cart.total", condition="tax > 1") as bp:
        S.Cart().total(0.5)
        t0 = time.monotonic()
        with pytest.raises(AssertionError, match=r"probe_subjects\.Cart\.total \(call with condition"
                                                 r" 'tax > 1'\) was hit 0 of 1"):
            bp.wait(timeout=0.2)
        assert time.monotonic() - t0 < 2
