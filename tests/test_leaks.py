"""Recording and reading leak neither references nor memory."""

import asyncio
import gc
import os
import sys
import threading
import tracemalloc
import warnings

import pytest
from _util import last_json, run_python

import calltape


class Payload:              # module level: pickled by reference to its class
    def __init__(self, n):
        self.n = n


@calltape.record
def plain(a, b, c):
    return RESULT


@calltape.record
def raising(a):
    raise ValueError("leak check")


@calltape.record
def gen(a):
    yield a
    yield a


@calltape.record
async def coro(a):
    return RESULT


RESULT = ("result", [1, 2, 3])


def _refcounts(objs):
    gc.collect()
    return [sys.getrefcount(o) for o in objs]


def test_refcounts_unchanged_after_many_calls(tape):
    fast = [1, 2, 3]                 # built-in fast path
    pickled = Payload(5)             # pickle fallback
    lock = threading.Lock()          # unencodable
    objs = [fast, pickled, lock, RESULT]

    def calls(n):
        for _ in range(n):
            assert plain(fast, pickled, lock) is RESULT
            assert plain(fast, b=pickled, c=lock) is RESULT
            with pytest.raises(ValueError):
                raising(fast)
            assert list(gen(pickled)) == [pickled, pickled]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calls(50)                    # warm-up: caches, first-call registration
        assert calltape.flush(timeout=30)
        before = _refcounts(objs)
        calls(10000 // 4)
        assert calltape.flush(timeout=30)
        after = _refcounts(objs)
    assert after == before


def test_refcounts_unchanged_async(tape):
    arg = {"k": [1, 2]}

    async def many(n):
        for _ in range(n):
            assert await coro(arg) is RESULT

    asyncio.run(many(50))
    assert calltape.flush(timeout=30)
    before = _refcounts([arg, RESULT])
    asyncio.run(many(2000))
    assert calltape.flush(timeout=30)
    assert _refcounts([arg, RESULT]) == before


def test_python_allocations_do_not_grow(tape):
    args = ("abc", 1.5)

    def run(n):
        for i in range(n):
            plain(i, *args)

    tracemalloc.start()
    try:
        run(200000)                  # warm-up at the same pace as the measured run
        assert calltape.flush(timeout=60)
        gc.collect()
    except BaseException:
        tracemalloc.stop()
        raise
    try:
        base = tracemalloc.get_traced_memory()[0]
        run(200000)
        assert calltape.flush(timeout=60)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 1024 * 1024, f"Python allocations grew by {grown} bytes over 200000 calls"


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's quarantine and shadow memory make RSS meaningless")
def test_rss_does_not_grow(tmp_path):
    # the buffer bounded at 4 MiB: the backlog a loaded machine leaves the writer
    # (and malloc keeps) cannot pass for growth; rounds 2 to 5 are compared, so a
    # leak of 8 bytes a call shows
    proc = run_python(tmp_path, """
        import gc, json, calltape
        calltape.configure(buffer_bytes=4 << 20)
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        @calltape.record
        def f(a, b, s):
            return a
        def run(n):
            for i in range(n):
                f(i, 2.5, "text")
        seen = []
        for _ in range(5):
            run(200000)
            assert calltape.flush(timeout=60)
            gc.collect()
            seen.append(rss())
        print(json.dumps({"grown": seen[4] - seen[1], "seen": seen}))
    """, tape=tmp_path / "rss.db", timeout=180)
    out = last_json(proc)
    assert out["grown"] < 5 * 1024 * 1024, f"RSS grew by {out['grown']} bytes over 600000 calls: {out}"


def test_values_of_an_unregistered_codec_do_not_leak(tmp_path):
    # recorded with a codec this process never registers: each read of the
    # value rebuilds an Unencodable marker naming the codec
    path = tmp_path / "codec.db"
    run_python(tmp_path, """
        import calltape
        class Opaque:
            pass
        calltape.register_codec(Opaque, "leakcheck.opaque", lambda o: b"x", lambda b: Opaque())
        @calltape.record
        def f(o):
            return 1
        f(Opaque())
    """, tape=path)
    tape = calltape.open(path)
    call_id = tape.calls()[0].id

    def read(n):
        for _ in range(n):
            value = tape.call(call_id).args["o"]
            assert value == calltape.Unencodable(
                "leakcheck.opaque", "no codec named 'leakcheck.opaque' is registered")

    read(200)
    tracemalloc.start()
    try:
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        read(5000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
        tape.close()
    assert grown < 64 * 1024, f"Python allocations grew by {grown} bytes over 5000 reads"


def test_decoding_an_unregistered_codec_value_leaks_nothing():
    # the same path without a tape: one CODEC value (name, data) decoded
    # directly, many times; neither memory nor the marker class's references grow
    name = b"leakcheck.unregistered"
    data = bytes([0x11, len(name)]) + name + bytes([3]) + b"abc"
    marker = calltape.Unencodable
    expected = calltape.Unencodable(name.decode(), f"no codec named {name.decode()!r} is registered")

    def decode(n):
        for _ in range(n):
            assert calltape._native.decode(data) == expected

    decode(200)
    refs = _refcounts([marker])
    tracemalloc.start()
    try:
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        decode(20000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert _refcounts([marker]) == refs
    assert grown < 64 * 1024, f"Python allocations grew by {grown} bytes over 20000 decodes"



def test_reading_values_as_stored_leaks_nothing(tmp_path):
    path = tmp_path / "stored.db"
    calltape.configure(tape=path)
    try:
        deep = calltape.record(lambda a, *r, k=None, **kw: {"r": [a, (a, {a})]}, locals=True)
        deep(Payload([1, {"x": (2.5, None)}]), "s", b"b", k=True, z=[[[]]])
        calltape.flush(timeout=30)
    finally:
        calltape.configure(tape=None)
    with calltape.open(path) as tape:
        c = tape.search()[0]

        def read(n):
            for _ in range(n):
                for slot in ("args", "result", "locals", "globals", "yielded"):
                    c.stored(slot)

        read(100)
        objs = [c, True, None]
        refs = _refcounts(objs)
        tracemalloc.start()
        try:
            gc.collect()
            base = tracemalloc.get_traced_memory()[0]
            read(5000)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert _refcounts(objs) == refs
        assert grown < 64 * 1024, f"Python allocations grew by {grown} bytes"
        assert c.stored("args")["a"]["attributes"]["n"]["items"][1]["type"] == "dict"


def test_the_module_state_shows_the_collector_every_reference_it_holds(tmp_path):
    """What the module state holds is visible to the cycle collector (the
    module's traverse), so a cycle through it can be collected: the
    imported helpers, the default tape's path and the redaction rules among
    them, which the traverse used to leave out."""
    out = run_python(tmp_path, """
        import gc, json, pickle
        import calltape
        from calltape import _native
        calltape.configure(tape="visible.db", redact=["visible_secret"])
        held = gc.get_referents(_native)
        ids = {id(o) for o in held}
        print(json.dumps({
            "helpers": [id(o) in ids for o in (pickle.dumps, pickle.loads)],
            "tape": any(isinstance(o, str) and o.endswith("visible.db") for o in held),
            "rules": any(isinstance(o, frozenset) and "visible_secret" in o for o in held),
        }))
    """)
    assert last_json(out) == {"helpers": [True, True], "tape": True, "rules": True}
