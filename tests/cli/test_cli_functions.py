"""One run at a time and self time, through the `calltape` command as a user
runs it: a project recorded twice by `calltape run -m app.main N` (threads
and a process pool, so each run is several sessions), then `functions`,
`search`, `replay`, `make-tests` with `--last` and `--session`, `run
--fresh`, the exit line, bare names and `sessions`.
"""

import json
import re
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from test_cli_project import calltape_cmd, one_sentence

import calltape

SHOP = '''
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor


class Inventory:
    def __init__(self):
        self.stock = {"tea": 5}

    def take(self, name, n):
        self.stock[name] -= n
        return self.stock[name]


class Basket:
    def take(self, item):
        return item


def inner():
    time.sleep(0.02)


def outer():
    time.sleep(0.06)
    inner()
    inner()


def square(x):
    return x * x


def main(n):
    outer()
    Inventory().take("tea", 1)
    Basket().take("cup")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(square, range(n)))
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(square, range(n)))
'''

MAIN = '''
import sys

from app.shop import main

if __name__ == "__main__":
    main(int(sys.argv[1]))
'''

EXIT_LINE = re.compile(r"calltape: recorded ([\d,]+) calls? of ([\d,]+) functions?")


def ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def functions_json(cwd, *args):
    return {f["qualname"]: f for f in json.loads(ok(calltape_cmd(cwd, "functions", "--json",
                                                                 *args)).stdout)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The project recorded twice: `-m app.main 3`, then `-m app.main 5`.
    Returns (folder, [exit line of run 1, of run 2], [session ids of run 1, of run 2])."""
    proj = tmp_path_factory.mktemp("fnproj")
    (proj / "app").mkdir()
    (proj / "app" / "__init__.py").write_text("")
    (proj / "app" / "shop.py").write_text(SHOP)
    (proj / "app" / "main.py").write_text(MAIN)
    lines, ids = [], []
    for n in (3, 5):
        before = {s["id"] for s in sessions_json(proj)} if lines else set()
        proc = ok(calltape_cmd(proj, "run", "-m", "app.main", str(n)))
        lines.append(proc.stderr.strip().splitlines()[-1])
        ids.append(sorted({s["id"] for s in sessions_json(proj)} - before))
    return proj, lines, ids


def sessions_json(cwd, *args):
    proc = calltape_cmd(cwd, "sessions", "--json", *args)
    return json.loads(proc.stdout) if proc.returncode == 0 else []


def test_each_run_is_its_session_and_its_child_processes(runs):
    proj, _, ids = runs
    assert len(ids[0]) >= 2 and len(ids[1]) >= 2  # the process pool's workers recorded too
    by_id = {s["id"]: s for s in sessions_json(proj)}
    for run in ids:
        root = run[0]
        assert by_id[root]["parent"] is None
        assert all(by_id[i]["parent"] == root for i in run[1:])


def test_functions_last_and_session_select_one_run(runs):
    proj, _, ids = runs
    every = functions_json(proj)
    last = functions_json(proj, "--last")
    first = functions_json(proj, "--session", str(ids[0][0]))
    # square: n calls in the thread pool (the run's own session), n in the workers
    assert every["square"]["calls"] == 2 * 3 + 2 * 5
    assert last["square"]["calls"] == 2 * 5
    assert first["square"]["calls"] == 3  # the first run's main process only
    for name in ("outer", "inner", "main"):
        assert last[name]["calls"] == first[name]["calls"] == every[name]["calls"] // 2
    workers = functions_json(proj, "--session", str(ids[1][1]))
    assert set(workers) == {"square"}


def test_functions_without_a_selection_says_it_sums_the_sessions(runs):
    proj, _, ids = runs
    out = ok(calltape_cmd(proj, "functions")).stdout.splitlines()
    n = len(ids[0]) + len(ids[1])
    assert out[0] == (f"{n} sessions summed; pick one run with --last (the newest) or"
                      " --session ID (see: calltape sessions)")
    assert out[1].split() == ["function", "calls", "raised", "total", "self", "mean", "max",
                              "where"]
    one = ok(calltape_cmd(proj, "functions", "--session", str(ids[0][0]))).stdout
    assert "summed" not in one
    last = ok(calltape_cmd(proj, "functions", "--last")).stdout.splitlines()[0]
    assert last.startswith(f"the last run: session {ids[1][0]} and {len(ids[1]) - 1} child")


def test_a_session_that_is_not_on_the_tape_is_one_sentence(runs):
    proj, _, _ = runs
    for command in ("functions", "search", "replay"):
        proc = calltape_cmd(proj, command, "--session", "999")
        assert proc.returncode == 2
        assert one_sentence(proc) == ("calltape: there is no session 999 in calltape.db"
                                      " (see: calltape sessions)")
    proc = calltape_cmd(proj, "functions", "--session", "1", "--last")
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_self_time_is_total_minus_the_recorded_children(runs):
    proj, _, _ = runs
    fns = functions_json(proj, "--last")
    outer, inner = fns["outer"], fns["inner"]
    assert inner["calls"] == 2 and outer["calls"] == 1
    # outer sleeps 60 ms, then calls inner twice (20 ms each): its self time is
    # its total less inner's, which it made
    assert outer["self"] == pytest.approx(outer["total"] - inner["total"], abs=2e-9)
    assert 0.06 <= outer["self"] < 0.06 + 0.05
    assert inner["total"] >= 0.04 and inner["self"] == inner["total"]  # no recorded children
    main = fns["main"]
    assert main["self"] < main["total"] - outer["total"] + 1e-6
    square = fns["square"]
    assert square["self"] == pytest.approx(square["total"], abs=1e-9)


def test_functions_sort_and_limit_like_pstats(runs):
    proj, _, _ = runs
    rows = json.loads(ok(calltape_cmd(proj, "functions", "--last", "--json", "--sort",
                                      "calls")).stdout)
    assert [r["calls"] for r in rows] == sorted((r["calls"] for r in rows), reverse=True)
    assert rows[0]["qualname"] == "square"
    names = [r["qualname"] for r in json.loads(ok(calltape_cmd(
        proj, "functions", "--last", "--json", "--sort", "name")).stdout)]
    assert names == sorted(names)
    for key, field in (("total", "total"), ("self", "self"), ("mean", "mean"), ("max", "max")):
        rows = json.loads(ok(calltape_cmd(proj, "functions", "--last", "--json", "--sort",
                                          key)).stdout)
        values = [r[field] for r in rows]
        assert values == sorted(values, reverse=True), key
    by_self = json.loads(ok(calltape_cmd(proj, "functions", "--last", "--json", "--sort",
                                         "self")).stdout)
    order = [r["qualname"] for r in by_self]
    assert order.index("outer") < order.index("inner")  # 60 ms of its own, inner 2 x 20 ms
    by_total = [r["qualname"] for r in json.loads(ok(calltape_cmd(
        proj, "functions", "--last", "--json")).stdout)]
    assert by_total[:2] == ["main", "outer"]  # the default: total
    out = ok(calltape_cmd(proj, "functions", "--last", "--sort", "calls", "--limit", "2")).stdout
    lines = out.splitlines()
    assert len(lines) == 1 + 1 + 2 + 1  # the run, the header, two functions, the hint
    assert lines[2].startswith("app.shop.square ") and lines[3].startswith("app.shop.inner ")
    total = len(by_self)
    assert lines[-1] == f"{total - 2} more functions; use --limit"
    assert "--sort" in ok(calltape_cmd(proj, "functions", "--help")).stdout
    proc = calltape_cmd(proj, "functions", "--sort", "speed")
    assert proc.returncode == 2 and "invalid choice: 'speed'" in proc.stderr


def test_where_is_relative_to_the_working_folder(runs, tmp_path):
    proj, _, _ = runs
    out = ok(calltape_cmd(proj, "functions", "--last")).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("app.shop.outer "))
    assert line.split()[-1] == "app/shop.py:24"
    elsewhere = ok(calltape_cmd(tmp_path, "functions", proj / "calltape.db", "--last")).stdout
    line = next(ln for ln in elsewhere.splitlines() if ln.startswith("app.shop.outer "))
    assert line.split()[-1] == f"{proj / 'app' / 'shop.py'}:24"


def test_the_exit_line_counts_this_run_only(runs):
    proj, lines, ids = runs
    for line, run in zip(lines, ids):
        m = EXIT_LINE.match(line)
        assert m, line
        fns = json.loads(ok(calltape_cmd(proj, "functions", "--json", "--session",
                                         str(run[0]))).stdout)
        every = {}
        for session in run:
            for f in json.loads(ok(calltape_cmd(proj, "functions", "--json", "--session",
                                                str(session))).stdout):
                every[f["id"]] = every.get(f["id"], 0) + f["calls"]
        assert int(m[1].replace(",", "")) == sum(every.values())
        assert int(m[2]) == len(every)
        workers = len(run) - 1
        assert f"in {workers} child process{'es' if workers > 1 else ''})" in line
        assert line.endswith("(see: calltape functions --last"
                             f" {proj / 'calltape.db'})")
        assert sum(f["calls"] for f in fns) < sum(every.values())
    # the second run's line does not count the first run's calls
    n1 = int(EXIT_LINE.match(lines[0])[1].replace(",", ""))
    n2 = int(EXIT_LINE.match(lines[1])[1].replace(",", ""))
    assert n2 - n1 == 2 * (5 - 3)  # two more squares in the threads and in the workers


def test_search_replay_and_make_tests_take_the_selection(runs, tmp_path):
    proj, _, ids = runs
    last = json.loads(ok(calltape_cmd(proj, "search", "--function", "square", "--last",
                                      "--json", "--limit", "100")).stdout)
    assert len(last) == 10 and {c["session"] for c in last} <= set(ids[1])
    assert len({c["session"] for c in last}) >= 2  # the run's own and a worker's
    first = json.loads(ok(calltape_cmd(proj, "search", "--function", "square", "--session",
                                       str(ids[0][0]), "--json")).stdout)
    assert sorted(c["preview"] for c in first) == ["0", "1", "2"]
    report = json.loads(ok(calltape_cmd(proj, "replay", "--trust", "--json", "--function",
                                        "square", "--last")).stdout)
    assert report["counts"]["passed"] == 10
    report = json.loads(ok(calltape_cmd(proj, "replay", "--trust", "--json", "--function",
                                        "square", "--session", str(ids[0][0]))).stdout)
    assert report["counts"]["passed"] == 3
    out = tmp_path / "test_rec_square.py"
    proc = ok(calltape_cmd(proj, "make-tests", "--trust", "--function", "square", "--out", out,
                           "--session", str(ids[0][0])))
    assert proc.stdout.startswith("wrote 3 tests to")
    proc = ok(calltape_cmd(proj, "make-tests", "--trust", "--function", "square", "--out", out,
                           "--last"))
    assert proc.stdout.startswith("wrote 5 tests to")  # 10 calls, 5 distinct arguments
    proc = ok(calltape_cmd(proj, "make-tests", "--trust", "--function", "square", "--out", out,
                           "--last", "--all"))
    assert proc.stdout.startswith("wrote 10 tests to")


def test_a_bare_name_finds_the_methods_of_that_name(runs):
    proj, _, _ = runs
    found = json.loads(ok(calltape_cmd(proj, "search", "--function", "take", "--last",
                                       "--json")).stdout)
    assert sorted(c["qualname"] for c in found) == ["Basket.take", "Inventory.take"]
    one = json.loads(ok(calltape_cmd(proj, "search", "--function", "Inventory.take", "--last",
                                     "--json")).stdout)
    assert [c["qualname"] for c in one] == ["Inventory.take"]
    glob = json.loads(ok(calltape_cmd(proj, "search", "--function", "ta*", "--last",
                                      "--json")).stdout)
    assert sorted(c["qualname"] for c in glob) == ["Basket.take", "Inventory.take"]
    report = json.loads(ok(calltape_cmd(proj, "replay", "--trust", "--json", "--function",
                                        "take", "--last")).stdout)
    assert sorted(o["function"] for o in report["outcomes"]) == [
        "app.shop.Basket.take", "app.shop.Inventory.take"]
    # a dotted name is not a bare one: no match on a qualname's last part only
    proc = calltape_cmd(proj, "search", "--function", "shop.take", "--json")
    assert json.loads(proc.stdout or "[]") == []


def test_sessions_show_argv_as_typed_and_start_before_their_first_call(runs):
    proj, _, ids = runs
    out = ok(calltape_cmd(proj, "sessions")).stdout
    root_lines = [ln for ln in out.splitlines() if re.match(rf"\s*{ids[1][0]}\s", ln)]
    assert root_lines and "-m app.main 5" in root_lines[0]
    assert "main.py" not in out.split("argv", 1)[1].split("\n", 1)[0]
    by_id = {s["id"]: s for s in sessions_json(proj)}
    assert by_id[ids[0][0]]["argv"] == ["-m", "app.main", "3"]
    for run in ids:
        for session in run:
            calls = json.loads(ok(calltape_cmd(proj, "search", "--session", str(session),
                                               "--order", "oldest", "--limit", "1",
                                               "--json")).stdout)
            assert calls and by_id[session]["start"] <= calls[0]["start"], session


def test_sessions_cut_a_long_argv_in_the_middle(tmp_path):
    (tmp_path / "long.py").write_text(textwrap.dedent('''
        import sys
        def f(x):
            return x
        f(len(sys.argv))
    '''))
    args = [f"arg{i:02d}" for i in range(40)]
    ok(calltape_cmd(tmp_path, "run", "long.py", *args))
    out = ok(calltape_cmd(tmp_path, "sessions")).stdout.splitlines()[1]
    argv = out.split("  vm  " if "  vm  " in out else None)[-1]
    assert "long.py arg00" in out and "arg39" in out and " ... " in out
    assert "arg20" not in out
    assert len(argv) < 80


def test_run_fresh_starts_a_new_tape(tmp_path):
    (tmp_path / "p.py").write_text("def f(x):\n    return x\n\nf(1)\nf(2)\n")
    for _ in range(2):
        ok(calltape_cmd(tmp_path, "run", "p.py"))
    assert len(sessions_json(tmp_path)) == 2
    proc = ok(calltape_cmd(tmp_path, "run", "--fresh", "p.py"))
    assert EXIT_LINE.match(proc.stderr.strip().splitlines()[-1])[1] == "2"
    assert len(sessions_json(tmp_path)) == 1
    assert json.loads(ok(calltape_cmd(tmp_path, "functions", "--json")).stdout)[0]["calls"] == 2
    # not a tape: refused, not removed
    (tmp_path / "notes.db").write_text("my notes\n")
    proc = calltape_cmd(tmp_path, "run", "--fresh", "--tape", "notes.db", "p.py")
    assert proc.returncode == 2 and (tmp_path / "notes.db").read_text() == "my notes\n"
    # a file that cannot be removed: one sentence, the program not run
    (tmp_path / "x.db-wal").mkdir()
    proc = calltape_cmd(tmp_path, "run", "--fresh", "--tape", "x.db", "p.py")
    assert proc.returncode == 2
    assert one_sentence(proc) == (f"calltape: cannot start a fresh tape: cannot remove"
                                  f" {tmp_path / 'x.db-wal'} (Is a directory)")


def test_the_tape_knows_self_time_without_the_command_line(tmp_path):
    """Tape.functions(session=...) and Function.self_time, as the API user reads them."""
    code = textwrap.dedent('''
        import time, calltape
        @calltape.record
        def inner():
            time.sleep(0.01)
        @calltape.record
        def outer():
            inner(); inner(); inner()
        outer()
        calltape.flush()
    ''')
    env_tape = tmp_path / "t.db"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], env={"CALLTAPE_TAPE": str(env_tape)},
                       check=True, timeout=60)
    tape = calltape.open(env_tape)
    every = {f.qualname: f for f in tape.functions()}
    assert every["inner"].calls == 6 and every["outer"].calls == 2
    assert every["outer"].self_time == pytest.approx(every["outer"].total - every["inner"].total,
                                                     abs=2e-9)
    [last] = tape.last_run()
    assert last == max(s.id for s in tape.sessions())
    mine = {f.qualname: f for f in tape.functions(session=last)}
    assert mine["inner"].calls == 3 and mine["inner"].self_time == mine["inner"].total
    assert len(tape.search(session=[last])) == 4 and len(tape.search(session=[])) == 0
    with pytest.raises(TypeError, match="session must be a session id"):
        tape.functions(session="1")


def test_an_older_tape_shows_self_time_as_unknown(tmp_path):
    """A tape of format 3 (before self time and the per-session totals) reads as it
    is: self time '-', and for one session the total and mean too."""
    (tmp_path / "p.py").write_text("def f(x):\n    return x\n\nf(1)\nf(2)\n")
    ok(calltape_cmd(tmp_path, "run", "p.py"))
    with sqlite3.connect(tmp_path / "calltape.db") as con:
        con.execute("ALTER TABLE functions DROP COLUMN self_ns")
        con.execute("DROP TABLE function_sessions")
        con.execute("PRAGMA user_version = 3")
    line = ok(calltape_cmd(tmp_path, "functions")).stdout.splitlines()[1]
    assert re.fullmatch(r"__main__\.f +2 +0 +[\d.]+ \w+ +- +[\d.]+ \w+ +[\d.]+ \w+ +p\.py:1",
                        line), line
    line = ok(calltape_cmd(tmp_path, "functions", "--last")).stdout.splitlines()[1]
    assert re.fullmatch(r"__main__\.f +2 +0 +- +- +- +[\d.]+ \w+ +p\.py:1", line), line
    [f] = json.loads(ok(calltape_cmd(tmp_path, "functions", "--last", "--json")).stdout)
    assert (f["calls"], f["total"], f["self"], f["mean"]) == (2, None, None, None)
