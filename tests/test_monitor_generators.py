"""Generators closed while they are freed: on 3.11 and 3.12 closing one runs its
frame once more (PY_THROW, then PY_UNWIND) after its entry was recorded as
closed; that must not be taken for another generator of the same code running
below it (reproduced from more-itertools' _FrozenMultiset, whose nested
__contains__ calls each run an any() over a generator expression)."""

import importlib
import sys
import textwrap

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
