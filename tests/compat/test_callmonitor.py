"""calltape.compat.callmonitor: every code example of callmonitor's README
(../shared/seeds/001_54ebaee5572fb446.txt) with only the import changed,
asserting on the values, and the original's defects (the seeds' README)
shown fixed.

Each recording runs in a fresh interpreter whose working folder is the
test's own (callmonitor's output folders are named there, and its context
is one per process); the reading is done here too, where it needs no
handler of the child's.
"""

import os
import textwrap

import numpy as np
import pytest
from _util import last_json, run_python

import calltape
from calltape import _native
from calltape.compat import callmonitor

NO_MPI = {"OMPI_COMM_WORLD_RANK": "", "PMI_RANK": "", "SLURM_PROCID": ""}


def record(folder, source, env=None, **kw):
    """Runs `source` (dedented) in a child whose cwd is `folder`."""
    return run_python(folder, textwrap.dedent(source), env_extra={**NO_MPI, **(env or {})},
                      **kw)


# ---- the seed's examples -------------------------------------------------------


def test_usage_intercept_saves_the_inputs_into_call_monitor(tmp_path):
    record(tmp_path, """
        from calltape.compat.callmonitor import intercept

        @intercept
        def test_fn_2(x, y=2, z=3):
            pass

        test_fn_2(1)
        test_fn_2(4, z=6)
    """)
    assert sorted(os.listdir(tmp_path / "call-monitor")) == ["calltape.db"]
    db = callmonitor.load(tmp_path / "call-monitor")
    assert db.get("test_fn_2", 1) == ([1], {})
    assert db.get("test_fn_2", 2) == ([4], {"z": 6})
    args = db.get_args("test_fn_2", 2)
    assert (args.x, args.y, args.z) == (4, 2, 6)


def test_output_is_never_overwritten(tmp_path):
    (tmp_path / "call-monitor").mkdir()
    (tmp_path / "call-monitor" / "mine.txt").write_text("an earlier run's")
    script = """
        from calltape.compat.callmonitor import intercept

        @intercept
        def f(x):
            return x

        f(int(sys.argv[1]))
    """
    for run in (1, 2):
        record(tmp_path, script, args=[str(run)])
    assert (tmp_path / "call-monitor" / "mine.txt").read_text() == "an earlier run's"
    assert not (tmp_path / "call-monitor" / "calltape.db").exists()
    assert callmonitor.load(tmp_path / "call-monitor-1").get("f", 1) == ([1], {})
    assert callmonitor.load(tmp_path / "call-monitor-2").get("f", 1) == ([2], {})
    assert not (tmp_path / "call-monitor-3").exists()


def test_settings_enable_multi_threading_names_the_folder(tmp_path):
    out = record(tmp_path, """
        import json
        import calltape.compat.callmonitor as cm
        from calltape.compat.callmonitor import intercept
        from calltape.compat.callmonitor import Settings

        THREAD_ID = 7

        @intercept
        def f(x):
            return x

        settings = Settings()
        settings.enable_multi_threading(THREAD_ID)
        f(1)                     # Settings are read here, at the first call
        settings.enable_multi_threading(8)
        f(2)                     # ... and again only at CONTEXT.new
        cm.CONTEXT.new()
        f(3)
        print(json.dumps([os.path.basename(cm.CONTEXT.root), Settings() is settings,
                          settings.tid_tag]))
    """)
    assert last_json(out) == ["call-monitor-tid=8", True, "-tid=8"]
    assert callmonitor.load(tmp_path / "call-monitor-tid=7").get("f", 2) == ([2], {})
    assert callmonitor.load(tmp_path / "call-monitor-tid=8").get("f", 1) == ([3], {})
    assert not (tmp_path / "call-monitor").exists()


def test_registering_your_own_argument_handler(tmp_path):
    """The seed's NPHandler, defined by the user and registered: its save
    runs at the call, the file it writes is kept on the tape, its load
    brings the array back at db.get (with the handler registered there)."""
    handler = """
        import numpy as np

        from os.path     import join
        from calltape.compat.callmonitor import Handler, REGISTRY

        class NPHandler(Handler):

            def load(self, path):
                self.data = np.load(join(path, f"arg_{self.target}.npy"))


            def save(self, path):
                np.save(join(path, f"arg_{self.target}.npy"), self.data)
                SAVED.append(sorted(os.listdir(path)))


            @classmethod
            def accumulator_done(cls):
                DONE.append(len(SAVED))

        SAVED, DONE = [], []
        REGISTRY.add(np.ndarray, NPHandler)
    """
    out = record(tmp_path, handler + """
        import json
        from calltape.compat.callmonitor import intercept

        @intercept
        def test_np_1(x, n):
            return float(n.sum())

        test_np_1(10, np.zeros(10))
        test_np_1(11, n=np.arange(6.0).reshape(2, 3))
        print(json.dumps([SAVED, DONE]))
    """)
    assert last_json(out) == [[["arg_0.npy"], ["arg_0.npy"]], [1, 2]]
    out = record(tmp_path, handler + """
        import json
        from calltape.compat.callmonitor import load

        db = load("call-monitor")
        (x, n), kw = db.get("test_np_1", 1)
        (x2, n2), kw2 = db.get("test_np_1", 2)    # passed as n=: the same call
        print(json.dumps([x, n.tolist(), kw, x2, n2.tolist(), str(n2.dtype), SAVED]))
    """)
    assert last_json(out) == [10, [0.0] * 10, {}, 11, [[0, 1, 2], [3, 4, 5]], "float64", []]
    # here, without the handler registered: the value says which codec it needs
    (x, n), _ = callmonitor.load(tmp_path / "call-monitor").get("test_np_1", 1)
    assert x == 10 and isinstance(n, calltape.Unencodable)
    assert "no codec named 'callmonitor:__main__.NPHandler' is registered" in n.reason


def test_the_numpy_handler_again_is_calltapes_own_array_codec(tmp_path):
    record(tmp_path, """
        import numpy as np
        from calltape.compat.callmonitor import NPHandler, REGISTRY, intercept

        class Mine(NPHandler):
            pass

        @intercept
        def f(a):
            pass

        REGISTRY.add(np.ndarray, Mine)
        f(np.zeros(2))
        REGISTRY.add(np.ndarray, NPHandler)
        f(np.ones(2))
    """)
    db = callmonitor.load(tmp_path / "call-monitor")
    assert isinstance(db.get("f", 1)[0][0], calltape.Unencodable)  # Mine is not registered here
    assert db.get("f", 2)[0][0].tolist() == [1.0, 1.0]


def test_loading_data(tmp_path, monkeypatch):
    record(tmp_path, """
        import numpy as np
        from calltape.compat.callmonitor import intercept

        @intercept
        def function_name(a, b=1):
            return a

        @intercept
        def test_np_1(x, n):
            pass

        function_name("first")
        function_name("second", b=[1, 2])
        test_np_1(10, np.zeros(10))
        test_np_1(20, np.ones(2))
    """)
    monkeypatch.chdir(tmp_path)
    from calltape.compat.callmonitor import load

    db = load("call-monitor")
    invocation_count = 2
    args, kwargs = db.get("function_name", invocation_count)
    assert (args, kwargs) == (["second", [1, 2]], {})     # function_name(*args, **kwargs)
    out = db.get("test_np_1", 1)
    assert out[0][0] == 10 and out[1] == {}
    assert isinstance(out[0][1], np.ndarray) and out[0][1].tolist() == [0.0] * 10
    assert repr(out) == (
        "([10, array([0., 0., 0., 0., 0., 0., 0., 0., 0., 0.])], {})")


def test_interacting_registry_db_and_args_reprs(tmp_path, monkeypatch):
    record(tmp_path, """
        import numpy as np
        from calltape.compat.callmonitor import intercept

        @intercept
        def test_np_1(x, n):
            pass

        @intercept
        def test_fn_1(x, y=2, z=3):
            pass

        test_np_1(10, np.zeros(10))
        test_np_1(20, n=np.zeros(3))
        test_fn_1(1)
    """)
    monkeypatch.chdir(tmp_path)
    from calltape.compat import callmonitor  # was: import callmonitor

    assert repr(callmonitor.REGISTRY) == textwrap.dedent("""\
        {
            <class 'numpy.ndarray'>: <class 'calltape.compat.callmonitor.NPHandler'>
        }""")
    db = callmonitor.load("call-monitor")
    assert repr(db) == textwrap.dedent("""\
        {
            Locked: True
            test_np_1: {
                calls: 2
                args: ['x', 'n']
                defaults: None
            }
            test_fn_1: {
                calls: 1
                args: ['x', 'y', 'z']
                defaults: (2, 3)
            }
        }""")
    args = db.get_args("test_fn_1", 1)
    assert repr(args) == "dict_keys(['x', 'y', 'z'])" == str(args)
    assert args.x == 1 and args.y == 2 and args.z == 3


# ---- beyond the original: results and timing, processes, MPI -------------------


def test_results_and_timing_are_on_the_tape(tmp_path):
    out = record(tmp_path, """
        import json
        from calltape.compat.callmonitor import intercept, load

        class Grid:
            def __init__(self, size):
                self.size = size

            @intercept
            def area(self, border=0):
                return (self.size + border) ** 2

        @intercept
        def fails(x):
            raise ValueError(x)

        Grid(3).area(border=1)
        try:
            fails("bad")
        except ValueError:
            pass
        db = load("call-monitor", allow=["__main__"])
        c = db.call("area", 1)                       # a bare name, unambiguous
        args = db.get_args("area", 1)
        print(json.dumps([c.result, c.duration > 0, c.qualname, args.self.size, args.border,
                          db.call("Grid.area", 1) == db.call("__main__.Grid.area", 1) == c]))
    """)
    assert last_json(out) == [16, True, "Grid.area", 3, 1, True]
    db = callmonitor.load(tmp_path / "call-monitor")
    f = db.call("fails", 1)
    assert f.outcome == "raised" and f.exception.type == "builtins.ValueError"
    assert f.args == {"x": "bad"} and f.duration > 0
    with pytest.raises(calltape.RefusedGlobal, match="__main__.Grid"):
        db.get("area", 1)                            # its self: only when allowed


def test_processes_and_threads_record_into_one_database(tmp_path):
    record(tmp_path, """
        import multiprocessing, threading
        from calltape.compat.callmonitor import intercept, save_db

        @intercept
        def work(who, i):
            return i

        def child(tag):
            for i in range(5):
                work(tag, i)

        if __name__ == "__main__":
            work("main", 0)
            pid = os.fork()
            if pid == 0:
                child("forked")
                save_db()                 # os._exit skips the exit hooks
                os._exit(0)
            os.waitpid(pid, 0)
            p = multiprocessing.get_context("spawn").Process(target=child, args=("spawned",))
            p.start(); p.join()
            threads = [threading.Thread(target=child, args=(f"t{k}",)) for k in range(4)]
            [t.start() for t in threads]; [t.join() for t in threads]
    """)
    assert sorted(os.listdir(tmp_path)) == ["call-monitor", "script.py"]
    db = callmonitor.load(tmp_path / "call-monitor")
    seen = [tuple(db.get("work", n)[0]) for n in range(1, 32)]
    expected = [("main", 0)] + [(w, i) for w in ("forked", "spawned", "t0", "t1", "t2", "t3")
                                for i in range(5)]
    assert sorted(seen) == sorted(expected)
    assert len(db.tape.sessions()) == 3
    with pytest.raises(callmonitor.CallNotLogged, match="called 31 times"):
        db.get("work", 32)


@pytest.mark.parametrize("variable, rank, folder", [
    ("OMPI_COMM_WORLD_RANK", 3, "call-monitor-tid=3"),
    ("PMI_RANK", 1, "call-monitor-tid=1"),
    ("SLURM_PROCID", 0, "call-monitor"),
])
def test_mpi_ranks_name_the_folder_and_the_session(tmp_path, variable, rank, folder):
    record(tmp_path, """
        from calltape.compat.callmonitor import intercept

        @intercept
        def f():
            return 1

        f()
    """, env={variable: str(rank)})
    db = callmonitor.load(tmp_path / folder)
    assert db.get("f", 1) == ([], {})
    (session,) = db.tape.sessions()
    assert session.mpi_rank == rank


def test_mpi4py_names_the_rank_when_the_program_imported_it(tmp_path):
    for folder, args, rank in (("imported", ["import"], 4), ("not", [], 2)):
        where = tmp_path / folder
        (where / "mpi4py").mkdir(parents=True)
        (where / "mpi4py" / "__init__.py").write_text("")
        (where / "mpi4py" / "MPI.py").write_text(textwrap.dedent("""\
            class _Comm:
                def Get_rank(self):
                    return 4
            COMM_WORLD = _Comm()
        """))
        record(where, """
            sys.path.insert(0, os.getcwd())  # a stand-in mpi4py: this machine has no MPI
            if sys.argv[1:] == ["import"]:
                import mpi4py.MPI
            from calltape.compat.callmonitor import intercept

            @intercept
            def f():
                return 1

            f()
            # calltape never imports it itself: that would start MPI in the program
            assert ("mpi4py.MPI" in sys.modules) == (sys.argv[1:] == ["import"])
        """, env={"PMI_RANK": "2"}, args=args)
        (session,) = callmonitor.load(where / f"call-monitor-tid={rank}").tape.sessions()
        assert session.mpi_rank == rank


def test_nothing_is_written_before_the_first_call(tmp_path):
    out = record(tmp_path, """
        import calltape.compat.callmonitor as cm

        @cm.intercept
        def f():
            pass

        try:
            cm.CONTEXT.db
        except cm.DBNotInitialized as e:
            print(e)
    """)
    assert "it is made at the first intercepted call" in out.stdout
    assert sorted(os.listdir(tmp_path)) == ["script.py"]


def test_handlers_keep_every_file_and_never_fail_the_call(tmp_path):
    out = record(tmp_path, """
        import json
        from calltape.compat.callmonitor import Handler, REGISTRY, intercept, load

        class Big:
            def __init__(self, text):
                self.text = text

        class BigHandler(Handler):
            def save(self, path):
                os.mkdir(os.path.join(path, "parts"))
                with open(os.path.join(path, "parts", "text.txt"), "w") as f:
                    f.write(self.data.text)
                with open(os.path.join(path, "length"), "w") as f:
                    f.write(str(len(self.data.text)))

            def load(self, path):
                with open(os.path.join(path, "parts", "text.txt")) as f:
                    self.data = Big(f.read())
                assert int(open(os.path.join(path, "length")).read()) == len(self.data.text)

        class Fussy:
            pass

        class BrokenHandler(Handler):
            def save(self, path):
                raise OSError("disk on fire")

        REGISTRY.add(Big, BigHandler)
        REGISTRY.add(Fussy, BrokenHandler)

        @intercept
        def f(items, other=None):
            return len(items)

        assert f([Big("x" * 10000), Big("y")], other=Fussy()) == 2
        db = load("call-monitor")
        (items, other), kw = db.get("f", 1)
        print(json.dumps([[b.text[:3] for b in items], len(items[0].text), repr(other),
                          db.call("f", 1).result]))
    """)
    texts, length, other, result = last_json(out)
    assert texts == ["xxx", "y"] and length == 10000 and result == 2
    assert other == "Unencodable(type='Fussy', reason='OSError: disk on fire')"
    db = callmonitor.load(tmp_path / "call-monitor")
    assert db.tape.functions()[0].calls == 1


def test_handler_files_must_stay_in_their_folder():
    class H(callmonitor.Handler):
        def load(self, path):
            self.data = os.listdir(path)

    name, _, decode = callmonitor._codec(H)
    assert name == f"callmonitor:{__name__}.test_handler_files_must_stay_in_their_folder.<locals>.H"
    for evil in ("../escape", "/etc/x", "a/../../b"):
        with pytest.raises(ValueError, match="not a path inside its folder"):
            decode(_native.encode({"target": 0, "files": {evil: b"x"}}))
    assert decode(_native.encode({"target": 0, "files": {"ok": b"x"}})) == ["ok"]


def test_registry_add_checks_its_arguments():
    with pytest.raises(TypeError, match="REGISTRY.add needs a type to handle, not 3"):
        callmonitor.REGISTRY.add(3, callmonitor.DefaultHandler)
    with pytest.raises(TypeError, match="needs a Handler subclass for <class 'int'>, not"):
        callmonitor.REGISTRY.add(int, dict)
    assert callmonitor.Registry() is callmonitor.REGISTRY
    assert callmonitor.REGISTRY[int] is callmonitor.DefaultHandler
    assert list(callmonitor.REGISTRY) == [np.ndarray]
    assert callmonitor.REGISTRY[np.ndarray] is callmonitor.NPHandler


def test_load_errors_are_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="no callmonitor database at .*missing"):
        callmonitor.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="it holds no calltape.db"):
        callmonitor.load(tmp_path / "empty")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "db.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(FileNotFoundError, match="a database of the original callmonitor"):
        callmonitor.load(tmp_path / "old")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "calltape.db").write_text("not a tape" * 100)
    with pytest.raises(calltape.TapeError, match="is not a calltape tape"):
        callmonitor.load(tmp_path / "junk")


# ---- the original's defects (seeds/README.md), fixed --------------------------


def test_an_unpicklable_argument_does_not_fail_the_call(tmp_path):
    out = record(tmp_path, """
        import threading
        from calltape.compat.callmonitor import intercept

        @intercept
        def f(lock, callback, gen):
            return "ran"

        print(f(threading.Lock(), lambda: 1, (i for i in range(3))))
    """)
    assert out.stdout.strip() == "ran"
    (lock, callback, gen), kw = callmonitor.load(tmp_path / "call-monitor").get("f", 1)
    assert kw == {}
    assert all(isinstance(v, calltape.Unencodable) for v in (lock, callback, gen))
    assert (lock.type, gen.type) == ("_thread.lock", "generator")


def test_get_of_call_zero_negative_or_past_the_end_is_an_error(tmp_path):
    record(tmp_path, """
        from calltape.compat.callmonitor import intercept

        @intercept
        def f(x):
            return x

        f("a"), f("b")
    """)
    db = callmonitor.load(tmp_path / "call-monitor")
    assert db.get("f", 2) == (["b"], {})
    for n in (0, -1):
        with pytest.raises(ValueError, match=rf"invocation counts start at 1 .*not {n}$"):
            db.get("f", n)
    with pytest.raises(callmonitor.CallNotLogged,
                       match=r"__main__.f was called 2 times on .*: there is no call 3"):
        db.get("f", 3)
    with pytest.raises(TypeError, match="must be an int from 1, not '1'"):
        db.get_args("f", "1")
    with pytest.raises(callmonitor.CallNotLogged, match=r"no function 'g' on .*__main__.f\)"):
        db.get("g", 1)


def test_keyword_only_args_and_kwargs_are_kept(tmp_path):
    record(tmp_path, """
        from calltape.compat.callmonitor import intercept

        @intercept
        def f(a, b=2, *rest, k, m=5, **opts):
            return a

        f(1, k=3)
        f(1, 4, 5, 6, k=7, m=8, z=9)
    """)
    db = callmonitor.load(tmp_path / "call-monitor")
    assert db.get("f", 1) == ([1], {"k": 3})
    assert db.get("f", 2) == ([1, 4, 5, 6], {"k": 7, "m": 8, "z": 9})
    one, two = db.get_args("f", 1), db.get_args("f", 2)
    assert repr(one) == "dict_keys(['a', 'b', 'rest', 'k', 'm', 'opts'])"
    assert vars(one) == {"a": 1, "b": 2, "rest": (), "k": 3, "m": 5, "opts": {}}
    assert vars(two) == {"a": 1, "b": 4, "rest": (5, 6), "k": 7, "m": 8, "opts": {"z": 9}}
    assert "kwonlydefaults: {'m': 5}" in repr(db) and "defaults: (2,)" in repr(db)


def test_threads_record_every_call_without_a_shared_counter(tmp_path):
    record(tmp_path, """
        import threading
        from calltape.compat.callmonitor import intercept

        @intercept
        def f(thread, i):
            return i

        together = threading.Barrier(8)

        def run(k):
            together.wait()              # all alive at once: eight thread idents
            for i in range(50):
                f(k, i)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    """)
    db = callmonitor.load(tmp_path / "call-monitor")
    seen = [tuple(db.get("f", n)[0]) for n in range(1, 401)]
    assert sorted(seen) == [(k, i) for k in range(8) for i in range(50)]
    assert "calls: 400" in repr(db)
    assert len({db.call("f", n).thread for n in range(1, 401)}) == 8


def test_same_named_functions_in_two_modules_do_not_collide(tmp_path):
    for mod in ("alpha", "beta"):
        (tmp_path / f"{mod}.py").write_text(textwrap.dedent(f"""\
            from calltape.compat.callmonitor import intercept

            @intercept
            def step(x):
                return "{mod}", x
        """))
    record(tmp_path, """
        sys.path.insert(0, os.getcwd())
        import alpha, beta
        alpha.step(1); beta.step(2); alpha.step(3)
    """)
    db = callmonitor.load(tmp_path / "call-monitor")
    with pytest.raises(callmonitor.AmbiguousName,
                       match=r"'step' names 2 functions on .*: alpha.step, beta.step; give one"):
        db.get("step", 1)
    assert db.get("alpha.step", 1) == ([1], {}) and db.get("alpha.step", 2) == ([3], {})
    assert db.get("beta.step", 1) == ([2], {})
    with pytest.raises(callmonitor.CallNotLogged, match="beta.step was called 1 time on"):
        db.get("beta.step", 2)
    assert db.call("beta.step", 1).result == ("beta", 2)
    assert "    alpha.step: {\n        calls: 2" in repr(db)
    assert "    beta.step: {\n        calls: 1" in repr(db)
