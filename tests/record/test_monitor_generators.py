"""Generators closed while they are freed: on 3.11 and 3.12 closing one runs its
frame once more (PY_THROW, then PY_UNWIND) after its entry was recorded as
closed; that must not be taken for another generator of the same code running
below it (reproduced from more-itertools' _FrozenMultiset, whose nested
__contains__ calls each run an any() over a generator expression)."""

import gc
import importlib
import os
import sys
import textwrap
import tracemalloc

import calltape

SUBJECT = textwrap.dedent('''
    from collections import Counter
    from collections.abc import Set


    class FM(Set):
        def __init__(self, it):
            self._collection = frozenset(Counter(it).items())

        def __contains__(self, y):
            return any(y == x for x, _ in self._collection)

        def __iter__(self):
            return (x for x, c in self._collection for _ in range(c))

        def __len__(self):
            return sum(c for x, c in self._collection)

        def __hash__(self):
            return hash(self._collection)


    def equal():
        a = FM([FM([FM([0]), FM([1, 2])]), FM([FM([0, 1]), FM([2])])])
        b = FM([FM([FM([1, 2]), FM([0])]), FM([FM([2]), FM([1, 0])])])
        return a == b
''')


def test_nested_generators_closed_early_keep_every_call_and_result(tmp_path, monkeypatch):
    (tmp_path / "fm_subject.py").write_text(SUBJECT)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fm_subject", None)
    mod = importlib.import_module("fm_subject")
    tape = tmp_path / "t.db"
    with calltape.monitor(include=["fm_subject"], tape=tape) as m:
        assert mod.equal() is True
    assert calltape.flush(timeout=30)
    calls = list(calltape.open(tape, trust=True).calls())
    ids = [c.id for c in calls]
    assert len(calls) == m.calls
    assert ids == list(range(ids[0], ids[0] + len(ids))), "calls were lost"
    top = [c for c in calls if c.qualname == "FM.__contains__" and c.depth == 1]
    assert top and all(c.result is True for c in top)  # a == b: every element is in b
    closed = [c for c in calls if c.qualname.endswith("<genexpr>") and c.outcome == "closed"]
    assert closed  # any() stops early: those generators end closed
    sys.modules.pop("fm_subject", None)


def _count_to(n, label):
    for i in range(n):
        yield (label, i)


def test_many_generators_suspended_at_once_each_keep_their_own_call(tape):
    """Thousands of generators parked together (the parking table grows and
    probes past tombstones as some finish): each generator's one record has its
    own arguments and outcome, those still parked at stop are closed."""
    here = os.path.dirname(os.path.abspath(__file__))
    with calltape.monitor(paths=[here]):
        gens = [_count_to(3 + i % 5, f"g{i}") for i in range(3000)]
        for g in gens:
            next(g)
        finished = 0
        for i, g in enumerate(gens):
            if i % 3 == 0:                      # run to the end: returned
                assert [v for _, v in g] == list(range(1, 3 + i % 5))
                finished += 1
            elif i % 3 == 1:
                next(g)                         # resumed once more, then freed: closed
        del gens, g
        still = [_count_to(4, "s") for _ in range(50)]
        for g in still:
            next(g)                             # parked when the monitor stops: closed
    assert calltape.flush(timeout=30)
    calls = [c for c in calltape.open(tape).calls() if c.qualname == "_count_to"]
    assert len(calls) == 3050
    by_label = {c.args["label"]: c for c in calls if c.args["label"] != "s"}
    assert len(by_label) == 3000
    for i in range(3000):
        c = by_label[f"g{i}"]
        assert c.args["n"] == 3 + i % 5
        assert c.outcome == ("returned" if i % 3 == 0 else "closed"), (i, c.outcome)
    assert sum(c.outcome == "returned" for c in calls) == finished
    assert {c.outcome for c in calls if c.args["label"] == "s"} == {"closed"}


def test_a_generator_yielding_many_times_makes_one_record_and_keeps_no_memory(tape):
    here = os.path.dirname(os.path.abspath(__file__))

    def run():
        total = 0
        for _ in range(20):
            total += sum(v for _, v in _count_to(5000, "long"))
            g = _count_to(10, "dropped")
            next(g)
            del g
        return total

    with calltape.monitor(paths=[here]):
        run()                                   # warm-up: the table and buffers exist
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            label = "long"
            before = sys.getrefcount(label)
            assert run() == 20 * sum(range(5000))
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert sys.getrefcount(label) == before
    assert grown < 64 * 1024, f"Python allocations grew by {grown} bytes over 200,000 yields"
    assert calltape.flush(timeout=30)
    calls = [c for c in calltape.open(tape).calls() if c.qualname == "_count_to"]
    assert len(calls) == 80  # 40 generators in each of the two runs
    assert sorted({c.outcome for c in calls}) == ["closed", "returned"]
