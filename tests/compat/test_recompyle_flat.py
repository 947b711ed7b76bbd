"""calltape.compat.recompyle's flat profiler: Recompyle 0.2's flat_profile and
shallow_call_profiler, called as the original calls its callbacks, with its log
texts, over calltape.flat_profile (so closures, super() and async work)."""

import asyncio
import logging
import re
import sys
import time

import pytest

from calltape.compat.recompyle import flat_profile, shallow_call_profiler

SYSMON = sys.version_info >= (3, 12)


def nap(t):
    time.sleep(t)


def test_the_original_log_texts(caplog):
    # a limit far from both calls' times, so that a loaded machine cannot move one across it
    @flat_profile(time_limit=0.2)
    def handle(t):
        nap(t)
        nap(t / 2)
        return len("ab")

    with caplog.at_level(logging.INFO, logger="recompyle.applied.flat_profiler"):
        assert handle(0) == 2
        handle(0.15)
    below, above = (r.getMessage() for r in caplog.records
                    if r.name == "recompyle.applied.flat_profiler")
    m = re.fullmatch(r"test_the_original_log_texts\.<locals>\.handle finished in (\S+)s,"
                     r" below limit of 0\.2s", below)
    assert m and float(m[1]) < 0.2, below
    head, times = above.split("\n", 1)
    m = re.fullmatch(r"test_the_original_log_texts\.<locals>\.handle finished in (\S+)s,"
                     r" above limit of 0\.2s", head)
    assert m and float(m[1]) >= 0.225, head
    # the breakdown: the names' sums, slowest first, as the original's pformat
    nap_s, len_s = re.fullmatch(r"\('nap: (\S+)s', 'len: (\S+)s'\)", times).groups()
    # (three significant digits, as the original prints them)
    assert 0.225 <= float(nap_s) <= float(m[1]) * 1.01 and float(len_s) < float(nap_s)


def test_callbacks_get_total_limit_times_and_the_function():
    got = []

    @shallow_call_profiler(time_limit=1, below_callback=lambda *a: got.append(a))
    def work():
        nap(0.01)
        nap(0.01)
        return abs(-1)

    assert work() == 1
    ((total, limit, times, func),) = got
    assert limit == 1 and func.__name__ == "work" and total >= 0.02
    assert set(times) == {"nap", "abs"}
    # one total per call site: their sum is what the original sums
    assert len(times["nap"]) == 2 and 0.02 <= sum(times["nap"]) <= total


def test_at_least_one_callback_and_a_real_limit():
    with pytest.raises(ValueError, match="At least one of below_callback and above_callback"):
        flat_profile(time_limit=1, below_callback=None, above_callback=None)
    with pytest.raises(ValueError, match="time_limit must be 0 or more seconds"):
        flat_profile(time_limit="1")


def test_blacklist_and_whitelist_filter_and_stay_as_given():
    got = []
    black, white = {"len"}, {"nap"}

    def body():
        nap(0)
        len("a")
        return abs(-2)

    flat_profile(time_limit=1, below_callback=lambda *a: got.append(a[2]), blacklist=black)(body)()
    flat_profile(time_limit=1, below_callback=lambda *a: got.append(a[2]), whitelist=white)(body)()
    flat_profile(time_limit=1, below_callback=lambda *a: got.append(a[2]),
                 ignore_builtins=True)(body)()
    assert [sorted(t) for t in got] == [["abs", "nap"], ["nap"], ["nap"]]
    assert black == {"len"} and white == {"nap"}


class Base:
    def total(self, x):
        return x * 2


def test_what_the_original_rejects_works():
    got = []
    keep = lambda *a: got.append(a[2])
    k = 3

    class Cart(Base):
        @flat_profile(time_limit=1, below_callback=keep)
        def total(self, x):  # a closure using super(): the original refuses both
            return super().total(x) + k

    @flat_profile(time_limit=1, below_callback=keep)
    async def fetch():
        await asyncio.sleep(0.01)
        return k

    assert Cart().total(2) == 7 and asyncio.run(fetch()) == 3
    assert "Base.total" in got[0] and (not SYSMON or "super" in got[0])
    assert "sleep" in got[1] and sum(got[1]["sleep"]) >= 0.01


def test_rewrite_details_tell_nothing_was_rewritten():
    details = {}

    def plain(x):
        return abs(x)

    flat_profile(time_limit=1, rewrite_details=details)(plain)
    assert details["original_func"] is plain
    assert details["original_source"] == details["new_source"]
    assert details["original_source"].lstrip().startswith("def plain(x):")
