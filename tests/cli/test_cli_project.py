"""The `calltape` command as a user runs it: the venv's console script (not
`python -m calltape`), in a subprocess whose working folder is a small
project with its own package, without PYTHONPATH.  Recording with
`calltape run prog.py`, then replay, show, make-tests and plain `pytest`.
"""

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import sysconfig
import textwrap

import pytest

import calltape

SCRIPTS = sysconfig.get_path("scripts")
CALLTAPE = os.path.join(SCRIPTS, "calltape")
PYTEST = os.path.join(SCRIPTS, "pytest")
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]

APP_CORE = '''
from dataclasses import dataclass


@dataclass
class Item:
    name: str
    price: float


def total(items, rate=0.2):
    return round(sum(i.price for i in items) * (1 + rate), 2)


class Cart:
    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)
        return len(self.items)
'''

PROG = '''
import sys

from app.core import Cart, Item, total


class Tag:
    def __init__(self, label):
        self.label = label

    def __eq__(self, other):
        return isinstance(other, Tag) and other.label == self.label


def tagged(tag):
    return Tag(tag.label.upper())


def main(argv):
    cart = Cart()
    cart.add(Item("tea", 1.0))
    cart.add(Item("cake", 2.5))
    print("total", total(cart.items))
    tagged(Tag("gift"))
    return len(argv)


if __name__ == "__main__":
    print("the main block ran")
    main(sys.argv[1:])
'''


def user_env():
    """The environment of a user's shell: no PYTHONPATH, no calltape settings."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "CALLTAPE_")) and k != "NO_COLOR"}


def run(cwd, *argv, prefix=(), timeout=120):
    return subprocess.run([*prefix, *map(str, argv)], cwd=str(cwd), env=user_env(),
                          capture_output=True, text=True, timeout=timeout)


def calltape_cmd(cwd, *args, prefix=(), timeout=120):
    return run(cwd, CALLTAPE, *args, prefix=prefix, timeout=timeout)


def one_sentence(proc):
    """The one line a user error prints, with no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("calltape: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def _console_scripts():
    assert os.path.exists(CALLTAPE), f"no calltape console script at {CALLTAPE}"


@pytest.fixture
def project(tmp_path):
    """A project folder with a package and a script, recorded by `calltape run prog.py`."""
    proj = tmp_path / "shopproj"
    (proj / "app").mkdir(parents=True)
    (proj / "app" / "__init__.py").write_text("")
    (proj / "app" / "core.py").write_text(APP_CORE)
    (proj / "prog.py").write_text(PROG)
    proc = calltape_cmd(proj, "run", "prog.py", "x", "y")
    assert proc.returncode == 0, proc.stderr
    assert "the main block ran" in proc.stdout
    return proj


def by_function(report):
    out = {}
    for o in report["outcomes"]:
        out.setdefault(o["function"], []).append(o)
    return out


def test_replay_from_the_project_folder_imports_its_modules(project):
    proc = calltape_cmd(project, "replay", "--trust", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    outcomes = by_function(report)
    for name in ("app.core.total", "app.core.Cart.__init__", "app.core.Cart.add",
                 "__main__.main", "__main__.tagged", "__main__.Tag.__init__"):
        assert {o["status"] for o in outcomes[name]} == {"passed"}, outcomes[name]
    assert report["counts"]["skipped"] == 1  # only the generator expression inside total()
    # main() was the script's, run once; its `if __name__ == "__main__"` block was not
    assert "the main block ran" not in proc.stdout
    assert proc.stdout.count("total 4.2") == 1


def test_replay_from_elsewhere_uses_the_recorded_folders(project, tmp_path):
    proc = calltape_cmd(tmp_path, "replay", project / "calltape.db", "--trust")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("8 passed, 0 changed, 0 failed, 1 skipped")


def test_sessions_hold_where_the_program_found_its_modules(project, tmp_path):
    sessions = json.loads(calltape_cmd(project, "sessions", "--json").stdout)
    assert [(s["sys_path0"], s["cwd"]) for s in sessions] == [(str(project), str(project))]
    # a script in another folder than the working one, and -m (sys.path[0] is the working folder)
    (tmp_path / "elsewhere").mkdir()
    tape = tmp_path / "elsewhere" / "t.db"
    assert calltape_cmd(tmp_path / "elsewhere", "run", "--tape", tape,
                        project / "prog.py").returncode == 0
    assert calltape_cmd(project, "run", "--tape", tape, "-m", "prog").returncode == 0
    sessions = json.loads(calltape_cmd(tmp_path, "sessions", tape, "--json").stdout)
    assert [(s["sys_path0"], s["cwd"]) for s in sessions] == [
        (str(project), str(project)), (str(project), str(tmp_path / "elsewhere"))]


def test_a_replay_that_skips_every_call_exits_5_saying_why(project):
    os.rename(project / "app", project / "app_moved")
    proc = calltape_cmd(project, "replay", "--trust", "--function", "app.core.Cart.*")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert one_sentence(proc) == (
        "calltape: nothing was replayed: all 3 selected calls were skipped: cannot import module"
        " app.core: ModuleNotFoundError: No module named 'app'")
    # with some calls run, skipped ones do not change the status
    os.rename(project / "app_moved", project / "app")
    assert calltape_cmd(project, "replay", "--trust").returncode == 0


def test_a_script_function_is_never_calltapes_own_main(tmp_path):
    """The README's set-up: the shop example recorded with -m, then replayed by
    the `calltape` command, whose own __main__ has a main() too."""
    assert calltape_cmd(tmp_path, "run", "-m", "calltape.examples.shop").returncode == 0
    proc = calltape_cmd(tmp_path, "replay", "--trust", "--function", "main", "-v",
                        timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert proc.stdout.count("__main__.main") == 1
    assert "usage: calltape" not in proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("1 passed, 0 changed, 0 failed, 0 skipped")


def test_a_deleted_script_is_skipped_with_the_reason(project):
    os.remove(project / "prog.py")
    proc = calltape_cmd(project, "replay", "--trust", "--json", "--function", "__main__.*")
    assert proc.returncode == 5
    reasons = {o["reason"] for o in json.loads(proc.stdout)["outcomes"]}
    assert reasons == {f"__main__.{q} cannot be found: it was recorded in the script"
                       f" {project / 'prog.py'} run as __main__, which is not here to load"
                       for q in ("main", "tagged", "Tag.__init__")}


def test_make_tests_for_methods_pass_under_plain_pytest(project, tmp_path):
    (project / "tests").mkdir()
    proc = calltape_cmd(project, "make-tests", "--allow", "app", "--function", "app.core.*",
                        "--out", "tests/test_recorded.py")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("wrote 4 tests to tests/test_recorded.py")
    source = (project / "tests" / "test_recorded.py").read_text()
    assert "add_import_path(__file__, '..')" in source
    assert "resolve('app.core', 'Cart.add')" in source
    for cwd, target in ((project, "tests/test_recorded.py"),
                        (tmp_path, project / "tests" / "test_recorded.py")):
        tests = run(cwd, PYTEST, "-q", "-p", "no:cacheprovider", target)
        assert tests.returncode == 0, tests.stdout + tests.stderr
        assert "4 passed" in tests.stdout
    # made from another folder: the recorded folders only
    elsewhere = calltape_cmd(tmp_path, "make-tests", project / "calltape.db", "--allow", "app",
                             "--function", "app.core.total", "--out",
                             project / "tests" / "test_total.py")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "\nadd_import_path(__file__, '..')\n" in (project / "tests" / "test_total.py").read_text()


def test_make_tests_skips_a_call_whose_values_cannot_be_rebuilt(project):
    (project / "tests").mkdir()
    os.rename(project / "app", project / "app_moved")
    proc = calltape_cmd(project, "make-tests", "--trust", "--function", "app.core.*",
                        "--out", "tests/test_recorded.py")
    assert proc.returncode == 2
    assert one_sentence(proc).startswith(
        "calltape: none of the 5 recorded calls of 'app.core.*' can become a test (call 3: its"
        " values cannot be rebuilt here: ModuleNotFoundError: No module named 'app'")


def test_show_rebuilds_project_classes_and_explains_the_others(project):
    calls = json.loads(calltape_cmd(project, "search", "--json", "--limit", "100").stdout)
    ids = {c["qualname"]: c["id"] for c in calls}
    shown = calltape_cmd(project, "show", "--trust", ids["total"])
    assert shown.returncode == 0, shown.stderr
    assert "items = [Item(name='tea', price=1.0), Item(name='cake', price=2.5)]" in shown.stdout
    assert "rate = 0.2" in shown.stdout
    tagged = calltape_cmd(project, "show", "--trust", ids["tagged"])
    assert tagged.returncode == 0 and tagged.stderr == ""
    assert re.search(r"  tag = Tag\(label='gift'\)  \(__main__.Tag, not rebuilt: its class"
                     r" __main__.Tag was defined in the script the recorded program ran as"
                     r" __main__, which is not loaded here\)\n", tagged.stdout), tagged.stdout
    os.rename(project / "app", project / "app_moved")
    gone = calltape_cmd(project, "show", "--trust", ids["Cart.add"], "--json")
    assert gone.returncode == 0 and gone.stderr == ""
    item = json.loads(gone.stdout)["args"]["item"]
    assert re.fullmatch(r"Item\(name='tea', price=1.0\)  \(app.core.Item, not rebuilt:"
                        r" ModuleNotFoundError:"
                        r" No module named 'app'\)", item), item
    refused = calltape_cmd(project, "show", ids["Cart.add"])
    assert refused.returncode == 0
    assert "refused to load the global app.core" in refused.stdout
    assert "--trust or --allow MODULE" in refused.stdout


def test_readable_gives_each_value_or_its_reason(project):
    os.rename(project / "app", project / "app_moved")
    tape = calltape.open(project / "calltape.db", trust=True)
    call = tape.search(function="total")[0]
    args, _, result = call.readable()
    assert isinstance(args["items"], calltape.Unreadable)
    assert args["items"].type == "list"
    assert args["items"].reason == "ModuleNotFoundError: No module named 'app'"
    assert args["items"].preview.startswith("[Item(name='tea'")
    assert args["rate"] == 0.2 and result == 4.2
    with pytest.raises(ModuleNotFoundError):
        call.args  # the whole-call view still raises


def test_readable_tells_the_defaults(tape):
    @calltape.record
    def price(qty, unit=9.5, *, currency="EUR"):
        return qty * unit

    price(2, currency="USD")
    calltape.flush()
    call = calltape.open(tape).search(function="*price")[0]
    assert call.readable() == ({"qty": 2, "unit": 9.5, "currency": "USD"}, frozenset({"unit"}),
                               19.0)
    assert call.defaults == frozenset({"unit"})


def test_run_a_folder_without_main_py(project):
    proc = calltape_cmd(project, "run", "app")
    assert proc.returncode == 2
    assert one_sentence(proc) == ("calltape: cannot run the folder 'app': it has no __main__.py"
                                  " (name a script in it, or a package with -m)")


def test_run_refuses_a_tape_it_could_not_write_before_running(project):
    marker = "the main block ran"
    (project / "notes.db").write_text("my notes\n" * 100)
    newer = project / "newer.db"
    newer.write_bytes((project / "calltape.db").read_bytes())
    with sqlite3.connect(newer) as con:
        con.execute("PRAGMA user_version = 99")
    damaged = project / "damaged.db"
    data = bytearray((project / "calltape.db").read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    damaged.write_bytes(bytes(data))
    cases = {
        "notes.db": f"{project / 'notes.db'} is not a calltape tape (not an SQLite database or"
                    " damaged: file is not a database)",
        "newer.db": f"{newer} was written by a newer calltape (tape format 99; this calltape"
                    " reads up to 6): upgrade calltape to read it",
        "damaged.db": f"{damaged} is not a calltape tape (not an SQLite database or damaged:"
                      " database disk image is malformed)",
    }
    for name, sentence in cases.items():
        proc = calltape_cmd(project, "run", "--tape", name, "prog.py")
        assert proc.returncode == 2, (name, proc.stderr)
        assert one_sentence(proc) == "calltape: " + sentence
        assert marker not in proc.stdout  # the program did not run
    assert (project / "notes.db").read_text() == "my notes\n" * 100


@contextlib.contextmanager
def read_only_folder(folder, how):
    """`folder` seen read-only: through a read-only bind mount, or with the
    permission bits (0555/0444) made effective for root by a bounding set
    without the capabilities that bypass them (setpriv).  Yields (the
    folder to use, the command prefix)."""
    if how == "mount":
        view = folder.parent / (folder.name + "-ro")
        view.mkdir()
        if subprocess.run(["mount", "--bind", str(folder), str(view)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot bind-mount here (needs CAP_SYS_ADMIN)")
        try:
            if subprocess.run(["mount", "-o", "remount,bind,ro", str(view)],
                              capture_output=True).returncode != 0:
                pytest.skip("cannot remount read-only here")
            assert subprocess.run(["touch", str(view / "x")], capture_output=True).returncode
            yield view, ()
        finally:
            subprocess.run(["umount", str(view)], check=True)
        return
    if os.geteuid() == 0 and subprocess.run([*NO_DAC, "true"], capture_output=True).returncode:
        pytest.skip("setpriv cannot drop the capabilities that ignore permissions")
    prefix = NO_DAC if os.geteuid() == 0 else ()
    modes = {p: os.stat(p).st_mode for p in [folder, *folder.iterdir()]}
    for p in modes:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    try:
        assert run(folder.parent, "touch", folder / "x", prefix=prefix).returncode
        yield folder, prefix
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)


@pytest.mark.parametrize("how", ["mount", "permissions"])
def test_a_tape_in_a_read_only_folder_is_read(project, tmp_path, how):
    box = tmp_path / "box"
    box.mkdir()
    (box / "t.db").write_bytes((project / "calltape.db").read_bytes())
    assert not os.path.exists(box / "t.db-wal") and not os.path.exists(box / "t.db-shm")
    before = (box / "t.db").read_bytes()
    with read_only_folder(box, how) as (view, prefix):
        tape = view / "t.db"
        functions = calltape_cmd(project, "functions", tape, prefix=prefix)
        assert functions.returncode == 0, functions.stderr
        assert "app.core.Cart.add" in functions.stdout
        calls = json.loads(calltape_cmd(project, "search", tape, "--json", "--function", "total",
                                        prefix=prefix).stdout)
        shown = calltape_cmd(project, "show", tape, calls[0]["id"], "--trust", prefix=prefix)
        assert "items = [Item(name='tea', price=1.0)" in shown.stdout, shown.stderr
        replay = calltape_cmd(project, "replay", tape, "--trust", prefix=prefix)
        assert replay.returncode == 0 and "8 passed" in replay.stdout, replay.stderr
        refused = calltape_cmd(project, "run", "--tape", tape, "prog.py", prefix=prefix)
        assert refused.returncode == 2 and "the main block ran" not in refused.stdout
        assert one_sentence(refused).startswith(f"calltape: cannot write the tape {tape}: ")
        fresh = calltape_cmd(project, "run", "--tape", view / "new.db", "prog.py", prefix=prefix)
        assert one_sentence(fresh).startswith(f"calltape: cannot write the tape {view / 'new.db'}:"
                                              " its folder is not writable")
    assert (box / "t.db").read_bytes() == before
    assert sorted(os.listdir(box)) == ["t.db"]


def test_a_read_only_folder_with_an_unindexed_log_says_so(project, tmp_path):
    """A write-ahead log without its -shm index cannot be read where the index
    cannot be made: one sentence, not "not a calltape tape"."""
    box = tmp_path / "box"
    box.mkdir()
    tape = box / "t.db"
    code = textwrap.dedent("""
        import os, signal, calltape
        f = calltape.record(lambda x: x)
        for i in range(100):
            f(i)
        calltape.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", code], env=dict(user_env(), CALLTAPE_TAPE=str(tape)),
                   timeout=60)
    os.remove(box / "t.db-shm")
    assert os.path.getsize(box / "t.db-wal") > 0
    with read_only_folder(box, "permissions") as (view, prefix):
        proc = calltape_cmd(project, "functions", view / "t.db", prefix=prefix)
    assert proc.returncode == 2
    assert one_sentence(proc) == (
        f"calltape: cannot read {tape}: its folder is read-only and its write-ahead log"
        f" {tape}-wal holds calls that SQLite reads only through an index file it cannot create"
        " there; copy the tape and its -wal file to a writable folder")


def test_sessions_with_an_argv_that_is_not_all_str(tmp_path):
    (tmp_path / "argv_prog.py").write_text(textwrap.dedent("""
        import sys
        import calltape
        sys.argv += [3, b"raw", None]
        calltape.record(lambda x: x)(1)
    """))
    assert run(tmp_path, sys.executable, "argv_prog.py").returncode == 0
    table = calltape_cmd(tmp_path, "sessions")
    assert table.returncode == 0 and table.stderr == ""
    assert "argv_prog.py 3 b'raw' None" in table.stdout
    listed = json.loads(calltape_cmd(tmp_path, "sessions", "--json").stdout)
    assert listed[0]["argv"] == ["argv_prog.py", "3", "b'raw'", "None"]  # argv is text
    # any other object: its type, never a value to rebuild
    (tmp_path / "argv_obj.py").write_text(textwrap.dedent("""
        import sys
        import calltape
        class Flag:
            pass
        sys.argv.append(Flag())
        calltape.record(lambda x: x)(1)
    """))
    assert run(tmp_path, sys.executable, "argv_obj.py").returncode == 0
    table = calltape_cmd(tmp_path, "sessions")
    assert table.returncode == 0 and table.stderr == ""
    newest = json.loads(calltape_cmd(tmp_path, "sessions", "--json").stdout)[0]
    assert newest["argv"] == ["argv_obj.py", "<Flag>"]


def test_show_an_int_of_100001_digits(tmp_path):
    (tmp_path / "big_prog.py").write_text(textwrap.dedent("""
        import calltape
        calltape.record(lambda n: n % 7)(10 ** 100000)
    """))
    assert run(tmp_path, sys.executable, "big_prog.py").returncode == 0
    call_id = json.loads(calltape_cmd(tmp_path, "search", "--json").stdout)[0]["id"]
    for extra in ((), ("--json",)):
        proc = calltape_cmd(tmp_path, "show", call_id, *extra)
        assert proc.returncode == 0 and proc.stderr == ""
        assert "1" + "0" * 100000 in proc.stdout
