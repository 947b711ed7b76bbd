"""`calltape make-tests`: the generated module is run by a real pytest subprocess."""

import json
import os
import subprocess
import sys

import pytest
from _util import child_env, run_python

import calltape

SHOP = '''
import calltape
from dataclasses import dataclass
from decimal import Decimal


@dataclass
class Line:
    sku: str
    unit: Decimal


@calltape.record
def price(qty, unit, *, currency="EUR", **tags):
    if qty < 0:
        raise ValueError(f"negative quantity {qty}")
    return {"total": qty * unit, "currency": currency, "tags": sorted(tags)}


@calltape.record
def line_total(line, qty):
    return line.unit * qty


@calltape.record
def pairs(n):
    for i in range(n):
        yield (i, i * i)
    return n


class Cart:
    def __init__(self, n):
        self.n = n

    @calltape.record
    def total(self, unit):
        return self.n * unit


@calltape.record
async def fetch(key):
    return key.upper()
'''


def env(tmp_path):
    return child_env(extra={"PYTHONPATH": f"{tmp_path}{os.pathsep}{child_env()['PYTHONPATH']}",
                            "PYTHONDONTWRITEBYTECODE": "1"})


def cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "calltape", *map(str, args)], env=env(tmp_path),
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=90)


def pytest_run(tmp_path, module):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(module)], env=env(tmp_path),
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=120)


@pytest.fixture
def recorded(tmp_path):
    (tmp_path / "shop_mt.py").write_text(SHOP)
    tape = tmp_path / "t.db"
    run_python(tmp_path, """
        sys.path.insert(0, os.getcwd())
        from decimal import Decimal
        import shop_mt
        shop_mt.price(3, 9.5)
        shop_mt.price(2, 0.1, currency="USD", urgent=True)
        try:
            shop_mt.price(-1, 1.0)
        except ValueError:
            pass
        shop_mt.line_total(shop_mt.Line("pen", Decimal("1.25")), 4)
        list(shop_mt.pairs(3))
        shop_mt.Cart(3).total(2.5)
        import asyncio
        asyncio.run(shop_mt.fetch("ab"))
    """, tape=tape, env_extra={"PYTHONDONTWRITEBYTECODE": "1"})
    return tape


def test_generated_module_passes_then_fails_after_a_change(tmp_path, recorded):
    out = tmp_path / "tests_out" / "test_recorded_shop.py"
    out.parent.mkdir()
    made = cli(tmp_path, "make-tests", recorded, "--function", "shop_mt.*", "--out", out,
               "--allow", "shop_mt")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"wrote 7 tests to {out} (values in ")
    text = out.read_text()
    # readable: literals where they exist, the data file for the rest
    assert "result = call(price, 3, 9.5)\n" in text
    assert "assert_same(result, {'total': 28.5, 'currency': 'EUR', 'tags': []})" in text
    assert "call(price, 2, 0.1, currency='USD', urgent=True)" in text
    assert "assert_raised(lambda: call(price, -1, 1.0)" in text
    assert "'builtins.ValueError', 'negative quantity -1'" in text
    # a value without a literal says what it is in a comment beside it
    assert ("    result = call(\n        line_total,\n        VALUES[0],  # shop_mt.Line:"
            " Line(sku='pen', unit=Decimal('1.25'))\n        4,\n    )\n"
            "    assert_same(result, VALUES[1])  # decimal.Decimal: Decimal('5.00')\n") in text
    assert "result = call(pairs, 3)\n    assert_same(result, 3)" in text
    assert "Cart_total = resolve('shop_mt', 'Cart.total')" in text
    assert "        VALUES[2],  # shop_mt.Cart: " in text and "    assert_same(result, 7.5)" in text
    assert "result = call(fetch, 'ab')\n    assert_same(result, 'AB')" in text
    assert "price = resolve('shop_mt', 'price')" in text
    assert f"    'tape': '{recorded}'," in text and "calltape make-tests" in text
    assert (out.parent / "test_recorded_shop.calltape").exists()
    passed = pytest_run(tmp_path, out)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "7 passed" in passed.stdout
    (tmp_path / "shop_mt.py").write_text(SHOP.replace("qty * unit", "qty * unit * 2")
                                         .replace("negative quantity", "no negative"))
    failed = pytest_run(tmp_path, out)
    assert failed.returncode == 1
    assert "3 failed, 4 passed" in failed.stdout  # line_total, pairs, total, fetch did not
    assert "result['total']: 28.5 != 57.0  (recorded != now)" in failed.stdout
    assert ("recorded builtins.ValueError: negative quantity -1, raised now"
            " builtins.ValueError: no negative -1") in failed.stdout


def test_values_file_needs_no_trust_beyond_the_module(tmp_path, recorded):
    out = tmp_path / "test_lines.py"
    assert cli(tmp_path, "make-tests", recorded, "--function", "line_total", "--out", out,
               "--allow", "shop_mt").returncode == 0
    assert "VALUES = load_values(__file__, allow=('shop_mt',))" in out.read_text()
    from calltape.testing import load_values
    with pytest.raises(calltape.RefusedGlobal, match="shop_mt.Line"):
        load_values(str(out))  # the data file holds a pickled shop_mt.Line


def test_json_limit_and_skips(tmp_path, recorded):
    out = tmp_path / "test_price.py"
    proc = cli(tmp_path, "make-tests", recorded, "--function", "price", "--out", out, "--limit",
               "2", "--trust", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert len(data["tests"]) == 2 and data["data"] is None and data["skipped"] == []
    assert not (tmp_path / "test_price.calltape").exists()
    assert pytest_run(tmp_path, out).returncode == 0


def test_usage_errors_exit_2(tmp_path, recorded):
    refused = cli(tmp_path, "make-tests", recorded, "--function", "line_total", "--out",
                  tmp_path / "t_x.py")
    assert refused.returncode == 2
    assert "refused to load the global shop_mt.Line" in refused.stderr
    assert "--trust or --allow MODULE" in refused.stderr
    none = cli(tmp_path, "make-tests", recorded, "--function", "nothing", "--out",
               tmp_path / "t_y.py")
    assert none.returncode == 2
    assert none.stderr.strip() == f"calltape: no recorded calls of 'nothing' in {recorded}"
    folder = cli(tmp_path, "make-tests", recorded, "--function", "price", "--out",
                 tmp_path / "no" / "t.py")
    assert folder.returncode == 2 and "does not exist" in folder.stderr
    not_py = cli(tmp_path, "make-tests", recorded, "--function", "price", "--out",
                 tmp_path / "t.txt")
    assert not_py.returncode == 2 and "must be a .py file" in not_py.stderr
    missing = cli(tmp_path, "make-tests", recorded, "--out", tmp_path / "t.py")
    assert missing.returncode == 2 and "--function" in missing.stderr


def test_script_functions_are_skipped(tmp_path):
    tape = tmp_path / "s.db"
    run_python(tmp_path, """
        import calltape
        @calltape.record
        def local(x):
            return x
        local(1)
    """, tape=tape)
    proc = cli(tmp_path, "make-tests", tape, "--function", "local", "--out", tmp_path / "t_s.py",
               "--trust")
    assert proc.returncode == 2
    assert "recorded in a script run as __main__" in proc.stderr


def write_module(tmp_path, name, source):
    import textwrap
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))


def test_skip_reasons_are_the_replayers(tape, tmp_path, monkeypatch):
    """make-tests asks the Replayer why a call cannot be replayed: one reason
    for a call whichever way out it takes (a marker deep inside an argument
    included), and an old f() call is judged by its own function row, not by
    the newer f(a, b) of the same name."""
    from calltape._maketests import write_tests

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    write_module(tmp_path, "mt_skips", """
        import threading
        import calltape
        @calltape.record
        def f():
            return 1
        @calltape.record
        def nested(box):
            return len(box)
        @calltape.record
        def gen():
            yield 1
            yield 2
        f()
        nested([1, [threading.Lock()]])
        g = gen()
        next(g)
        g.close()
    """)
    import mt_skips  # noqa: F401 - its calls are recorded at import
    sys.modules.pop("mt_skips")
    write_module(tmp_path, "mt_skips", """
        import calltape
        @calltape.record
        def f(a, b):
            return a + b
        @calltape.record
        def nested(box):
            return len(box)
        @calltape.record
        def gen():
            yield 1
            yield 2
        f(1, 2)
    """)
    import importlib
    importlib.invalidate_caches()
    importlib.import_module("mt_skips")
    calltape.flush()
    t = calltape.open(tape, trust=True)
    replayed = {o.call_id: o.reason for o in t.replay(function="mt_skips.*")}
    written = write_tests(t, "mt_skips.*", str(tmp_path / "test_mt.py"))
    skipped = dict(written.skipped)
    assert set(skipped) | set(written.tests) == set(replayed)
    for call_id, reason in skipped.items():
        assert reason == replayed[call_id]
    reasons = sorted(skipped.values())
    assert reasons[0].startswith("the argument box was not recorded (Unencodable(type=")
    assert reasons[1].startswith("the recorded generator or coroutine was closed")
    assert len(skipped) == 2 and len(written.tests) == 2  # both calls of f became tests
    assert all("args=False" not in r for r in replayed.values() if r)
    old_f = min(written.tests)
    assert replayed[old_f] == ("the signature no longer binds the recorded arguments: the"
                               " required parameter 'a' was not recorded")
    sys.modules.pop("mt_skips", None)


def test_testing_helpers_run_and_name_as_replay_does():
    from calltape.testing import assert_raised, call

    def gen(n):
        yield from range(n)
        return n * 2

    async def coro(x):
        return x + 1

    async def agen():
        yield 1

    assert call(gen, 3) == 6
    assert call(coro, 1) == 2
    assert call(agen) is None
    assert call(lambda *a, **k: (a, k), 1, b=2) == ((1,), {"b": 2})

    def boom():
        raise KeyError("x" * 3000)

    assert_raised(boom, "builtins.KeyError", repr("x" * 3000)[:2000])
    with pytest.raises(AssertionError, match="recorded builtins.ValueError: no, raised now"):
        assert_raised(boom, "builtins.ValueError", "no")
    with pytest.raises(AssertionError, match="returned 1 now"):
        assert_raised(lambda: 1, "builtins.KeyError", "x")
