"""The `calltape` command's output, run as a user runs it (the venv's console
script, in a subprocess, on tapes that real programs recorded): `show` with
every field each recording option adds, replay's and search's output on many
calls, make-tests' de-duplication, the reprs of calls and exceptions, where
calltape's warnings point, the option error messages, --version and --help.
"""

import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import warnings

import pytest

import calltape
from calltape.cli import EXAMPLES, build_parser

CALLTAPE = os.path.join(sysconfig.get_path("scripts"), "calltape")
PACKAGE = os.path.dirname(os.path.abspath(calltape.__file__))


def user_env(extra=None):
    """A user's shell: no PYTHONPATH, no calltape settings, no colour."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "CALLTAPE_")) and k != "NO_COLOR"}
    env.update(extra or {})
    return env


def calltape_cmd(cwd, *args, env=None, timeout=180):
    return subprocess.run([CALLTAPE, *map(str, args)], cwd=str(cwd), env=user_env(env),
                          capture_output=True, text=True, timeout=timeout)


def python(cwd, source, *args, env=None):
    script = cwd / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=str(cwd),
                          env=user_env(env), capture_output=True, text=True, timeout=120)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    return proc


PROG = '''
import threading

import calltape


class Box:  # defined in __main__: `show` cannot rebuild it, and says why
    def __init__(self, v):
        self.v = v


SCALE = 3


def scaled(x, *, by=1):
    y = x * SCALE * by
    return y


def bad(key):
    return {}[key]


def boxed(box):
    return box.v


@calltape.record(yields=True)
def squares(n):
    for i in range(n):
        yield i * i


def outer(n):
    total = 0
    for i in range(n):
        total += scaled(i, by=2)
    return total


outer(3)
try:
    bad("bad")
except KeyError:
    pass
boxed(Box(5))
list(squares(3))
t = threading.Thread(target=scaled, args=(7,), name="worker")
t.start()
t.join()
'''


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """PROG recorded by `calltape run --locals --globals --cpu --memory`: the
    ids of its calls by function."""
    root = tmp_path_factory.mktemp("show")
    (root / "prog.py").write_text(PROG)
    ok(calltape_cmd(root, "run", "--locals", "--globals", "--cpu", "--memory", "prog.py"))
    calls = json.loads(ok(calltape_cmd(root, "search", "--json", "--order", "oldest",
                                       "--limit", "100")).stdout)
    ids: dict[str, list[int]] = {}
    for c in calls:
        ids.setdefault(c["qualname"], []).append(c["id"])
    return root, ids


def show(root, call_id, *extra):
    return ok(calltape_cmd(root, "show", call_id, *extra)).stdout


def test_show_prints_every_recorded_field(recorded):
    root, ids = recorded
    outer, scaled = ids["outer"][0], ids["scaled"]
    text = show(root, outer)
    assert text.startswith(f"call {outer}: __main__.outer  (")
    assert re.search(r"\n  start     \S+ \S+   duration \S+ \S+   returned\n", text), text
    assert re.search(r"\n  session   1   thread \d+ \(MainThread\)   depth 0"
                     r"   captured by the monitor \(calltape\.monitor\)\n", text), text
    assert "\n  parent    none (a top-level call)\n" in text
    kids = ", ".join(f"{i} __main__.scaled" for i in scaled[:3])
    assert f"\n  children  3: {kids}\n" in text
    assert re.search(r"\n  cpu       \d+(\.\d+)? [num]?s\n", text), text
    assert re.search(r"\n  memory    rss \d+\.\d MiB before, \d+\.\d MiB after,"
                     r" peak \d+\.\d MiB\n", text), text
    assert "\n  n = 3  (int)\n  -> 18  (int)\n" in text  # scaled(i, by=2): 0 + 6 + 12
    # the locals at return, and the module globals it read (none: only functions)
    assert "\n  locals:\n    n = 3  (int)\n    total = 18  (int)\n    i = 2  (int)\n" in text
    assert "\n  globals:  (none)\n" in text
    assert text.rstrip().endswith("not recorded: energy (--energy)")

    child = show(root, scaled[1])
    assert f"\n  parent    {outer} __main__.outer\n" in child
    assert "\n  children  none\n" in child
    assert "\n  x = 1  (int)\n  by = 2  (int)\n  -> 6  (int)\n" in child
    assert "\n  globals:\n    SCALE = 3  (int)\n" in child
    threaded = show(root, scaled[3])
    assert re.search(r"thread \d+ \(worker\)", threaded), threaded


# 3.11's profile hook sees that a call raised, not the exception (README: Recording)
SEES_EXCEPTIONS = sys.version_info >= (3, 12)


def test_show_a_raised_call_a_generator_and_a_value_it_cannot_rebuild(recorded):
    root, ids = recorded
    raised = show(root, ids["bad"][0])
    if not SEES_EXCEPTIONS:
        assert "  raised:   the exception was not recorded (on Python 3.11" in raised
        assert "\n  locals:\n    key = 'bad'  (str)\n" in raised
        return
    assert "   raised KeyError('bad')\n" in raised
    assert "  key = 'bad'  (str)\n  raised:\n    Traceback (most recent call last):\n" in raised
    line = PROG.splitlines().index("    return {}[key]") + 1
    assert f"line {line}, in bad\n    KeyError: 'bad'\n" in raised
    assert "builtins." not in raised
    assert "\n  locals:\n    key = 'bad'  (str)\n" in raised

    boxed = show(root, ids["boxed"][0])
    reason = ("(__main__.Box, not rebuilt: refused to load the global __main__.Box from the"
              " tape: pass allow=['__main__.Box']")
    assert "\n  box = Box(v=5)  " + reason in boxed  # the argument: its preview and reason
    assert "\n    box = Box(v=5)  " + reason in boxed  # the same in the locals
    assert "\n  -> 5  (int)\n" in boxed  # the rest of the call is shown

    squares = show(root, ids["squares"][0])
    assert "\n  yielded:\n    [0] 0  (int)\n    [1] 1  (int)\n    [2] 4  (int)\n" in squares


def test_show_json_holds_the_same_fields(recorded):
    root, ids = recorded
    outer = json.loads(show(root, ids["outer"][0], "--json"))
    assert outer["thread_name"] == "MainThread" and outer["parent"] is None
    assert [c["function"] for c in outer["children"]] == ["__main__.scaled"] * 3
    assert outer["cpu_time"] > 0 and set(outer["memory"]) == {"rss_before", "rss_after", "peak"}
    values = outer["values"]
    assert values["args"] == {"n": {"repr": "3", "type": "int", "rebuilt": True,
                                    "reason": None, "default": False}}
    assert values["result"]["repr"] == "18"
    assert {k: v["repr"] for k, v in values["locals"].items()} == {"n": "3", "total": "18",
                                                                   "i": "2"}
    assert values["globals"] == {} and values["yielded"] is None
    child = json.loads(show(root, ids["scaled"][0], "--json"))
    assert child["parent"] == ids["outer"][0] and child["parent_function"] == "__main__.outer"
    assert child["values"]["globals"]["SCALE"]["type"] == "int"
    boxed = json.loads(show(root, ids["boxed"][0], "--json"))["values"]["args"]["box"]
    assert boxed["rebuilt"] is False and boxed["type"] == "__main__.Box"
    assert boxed["repr"] == "Box(v=5)" and "refused to load the global" in boxed["reason"]
    raised = json.loads(show(root, ids["bad"][0], "--json"))
    assert raised["outcome"] == "raised"
    if SEES_EXCEPTIONS:
        assert raised["exception"]["type"] == "builtins.KeyError"
        assert raised["exception"]["traceback"].endswith("KeyError: 'bad'")
    else:
        assert raised["exception"] is None
    squares = json.loads(show(root, ids["squares"][0], "--json"))["values"]["yielded"]
    assert [v["repr"] for v in squares] == ["0", "1", "4"]


def test_reprs_of_calls_and_exceptions(recorded):
    root, ids = recorded
    tape = calltape.open(root / "calltape.db")
    assert repr(tape.call(ids["scaled"][1])).startswith(
        f"<Call {ids['scaled'][1]} scaled(1, by=2) returned 6 in ")
    bad = tape.call(ids["bad"][0])
    if SEES_EXCEPTIONS:
        assert "bad('bad') raised KeyError('bad') in " in repr(bad)
        assert repr(bad.exception) == "KeyError('bad')"
    else:
        assert "bad('bad') raised in " in repr(bad) and bad.exception is None
    assert repr(calltape.ExceptionInfo("builtins.ValueError", "no")) == "ValueError('no')"
    assert repr(calltape.ExceptionInfo("app.core.OutOfStock", "")) == "OutOfStock()"
    search = ok(calltape_cmd(root, "search", "--outcome", "raised")).stdout
    if SEES_EXCEPTIONS:
        assert "raised KeyError('bad')  bad('bad')" in search
    else:
        assert re.search(r" raised +bad\('bad'\)", search), search


SUBJECT = '''
def label(n):
    return "item %d" % (n % 500)
'''


def test_replay_by_default_prints_the_changed_calls_and_a_summary(tmp_path):
    (tmp_path / "subject.py").write_text(SUBJECT)
    ok(python(tmp_path, """
        import calltape, subject
        calltape.configure(tape="t.db")
        label = calltape.record(subject.label)
        for n in range(1003):
            label(n)
    """))
    # today's code differs for three of the 1,003 recorded arguments, with a long text
    long = " ".join(f"word{i}" for i in range(60))
    (tmp_path / "subject.py").write_text(SUBJECT + f'''
_old = label


def label(n):
    return {long!r} if n == 7 else "other" if n in (8, 9) else _old(n)
''')
    proc = calltape_cmd(tmp_path, "replay", "t.db", "--allow", "subject")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) < 10, proc.stdout  # the header, 3 calls (one diff wrapped), the summary
    assert lines[0].split() == ["status", "id", "function", "took", "detail"]
    assert [ln.split()[0] for ln in lines if ln.startswith("changed")] == ["changed"] * 3
    assert lines[-1] == ("1000 passed, 3 changed, 0 failed, 0 skipped"
                         " (-v lists the 1,000 other calls)")
    assert any(re.fullmatch(r"changed +10  subject\.label +\S+ \S+  result: 'item 8' !="
                            r" 'other'", ln) for ln in lines), lines
    assert all(len(ln) <= 100 for ln in lines), lines  # wrapped to the width
    detail = proc.stdout[proc.stdout.index("'item 7' != "):].split("\nchanged")[0]
    words = detail.replace("…", " ").replace("'", " ").split()
    cut = [w for w in words if w.startswith("word") and not re.fullmatch(r"word\d+", w)]
    assert not cut and "word0" in words, detail  # never a word cut in two
    assert detail.rstrip().endswith("…")  # and said when cut

    every = calltape_cmd(tmp_path, "replay", "t.db", "--allow", "subject", "-v")
    assert every.returncode == 1
    assert sum(ln.startswith("passed") for ln in every.stdout.splitlines()) == 1000
    assert every.stdout.splitlines()[-1] == "1000 passed, 3 changed, 0 failed, 0 skipped"


def test_replay_of_only_passing_calls_is_one_line(tmp_path):
    (tmp_path / "subject.py").write_text(SUBJECT)
    ok(python(tmp_path, """
        import calltape, subject
        calltape.configure(tape="t.db")
        label = calltape.record(subject.label)
        for n in range(1000):
            label(n)
    """))
    proc = ok(calltape_cmd(tmp_path, "replay", "t.db", "--allow", "subject"))
    assert proc.stdout == "1000 passed, 0 changed, 0 failed, 0 skipped\n"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    ok(python(root, """
        import calltape
        calltape.configure(tape="t.db")

        @calltape.record
        def echo(text):
            return text

        for i in range(30):
            echo(f"plain {i}")
        echo("tab\\there\\nnewline")
        echo("寬" * 40)
        echo("x" * 500)
    """))
    return root


def test_search_says_how_many_more_calls_and_how_to_see_them(searched):
    proc = ok(calltape_cmd(searched, "search", "t.db", "--limit", "5"))
    assert len(proc.stdout.splitlines()) == 6
    assert proc.stderr == "calltape: 28 more calls; use --limit 33 to see more\n"
    every = ok(calltape_cmd(searched, "search", "t.db", "--limit", "33"))
    assert len(every.stdout.splitlines()) == 34 and every.stderr == ""
    filtered = ok(calltape_cmd(searched, "search", "t.db", "--function", "echo", "--limit", "5"))
    assert filtered.stderr == "calltape: 28 more calls; use --limit 33 to see more\n"
    as_json = ok(calltape_cmd(searched, "search", "t.db", "--limit", "5", "--json"))
    assert len(json.loads(as_json.stdout)) == 5 and "28 more calls" in as_json.stderr


def test_search_that_finds_nothing_says_so_and_exits_1(searched):
    proc = calltape_cmd(searched, "search", "t.db", "--function", "nothing")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["calltape: no recorded call matches in t.db"]
    as_json = calltape_cmd(searched, "search", "t.db", "--function", "nothing", "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout) == []


def test_search_columns_stay_aligned_whatever_the_values(searched):
    import unicodedata

    def width(s):
        return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)

    lines = ok(calltape_cmd(searched, "search", "t.db", "--limit", "4")).stdout.splitlines()
    assert len(lines) == 5  # one line per call: newlines in values do not break rows
    assert r"echo('tab\\there\\nnewline')" in "\n".join(lines) or \
        r"echo('tab\there\nnewline')" in "\n".join(lines)
    assert "\t" not in "\n".join(lines)
    start = width(lines[0][:lines[0].index("call")])
    for line in lines[1:]:
        at = line.index("echo(")
        assert width(line[:at]) == start, lines
        assert width(line[at:]) <= 100, line  # a wide value is cut ...
    assert any(line.endswith("…") for line in lines)  # ... with an ellipsis


MODULE = '''
from dataclasses import dataclass


@dataclass
class Point:
    x: int
    y: int


def sq(x):
    return x * x


def norm(p):
    return abs(p.x) + abs(p.y)
'''


def test_make_tests_writes_one_test_per_distinct_call(tmp_path):
    (tmp_path / "geo.py").write_text(MODULE)
    ok(python(tmp_path, """
        import calltape, geo
        calltape.configure(tape="t.db")
        sq, norm = calltape.record(geo.sq), calltape.record(geo.norm)
        for i in range(60):
            sq(i % 3)
            norm(geo.Point(1, -2))
    """))
    out = tmp_path / "test_geo.py"
    proc = ok(calltape_cmd(tmp_path, "make-tests", "t.db", "--function", "geo.*", "--out", out,
                           "--allow", "geo"))
    assert proc.stdout.splitlines()[0].startswith(f"wrote 4 tests to {out}")
    assert "116 calls with the same function and arguments as a test left out" in proc.stdout
    text = out.read_text()
    assert text.count("\ndef test_") == 4
    # the one value without a literal says what it is, beside it
    assert "        VALUES[0],  # geo.Point: Point(x=1, y=-2)\n" in text
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(out)], cwd=str(tmp_path), env=user_env(), capture_output=True,
                         text=True, timeout=120)
    assert "4 passed" in run.stdout, run.stdout + run.stderr
    every = ok(calltape_cmd(tmp_path, "make-tests", "t.db", "--function", "geo.*", "--out", out,
                            "--allow", "geo", "--all", "--json"))
    assert len(json.loads(every.stdout)["tests"]) == 120
    assert out.read_text().count("\ndef test_") == 120


def warnings_of(tmp_path, source, env=None):
    """The (file, line) of each RecordingWarning `source` caught, run as a script."""
    proc = ok(python(tmp_path, """
        import json, sys, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
    """ + textwrap.indent(textwrap.dedent(source), " " * 12) + """
        print(json.dumps([[w.filename, w.lineno, str(w.message)] for w in caught
                          if w.category.__name__ == "RecordingWarning"]))
    """, env=env))
    lines = (tmp_path / "script.py").read_text().splitlines()
    return [(f, lines[n - 1].strip() if f == str(tmp_path / "script.py") else n)
            for f, n, _ in json.loads(proc.stdout.splitlines()[-1])]


def test_warnings_point_at_the_users_line(tmp_path):
    script = str(tmp_path / "script.py")
    no_energy = {"CALLTAPE_POWERCAP_ROOT": str(tmp_path / "no-powercap")}
    assert warnings_of(tmp_path, """
        import calltape
        calltape.configure(energy=True)
    """, no_energy) == [(script, "calltape.configure(energy=True)")]
    assert warnings_of(tmp_path, """
        import calltape
        calltape.configure(tape="t.db")

        @calltape.record(energy=True)
        def f(x):
            return x
        f(1)
    """, no_energy) == [(script, "@calltape.record(energy=True)")]
    found = warnings_of(tmp_path, """
        import calltape
        calltape.configure(tape="t.db")
        f = calltape.record(lambda x: x)
        f(1)
    """, {"OMPI_COMM_WORLD_RANK": "x"})
    assert found == [(script, "f(1)")]
    missing = tmp_path / "no-such-folder" / "t.db"
    found = warnings_of(tmp_path, f"""
        import calltape
        calltape.configure(tape={str(missing)!r})
        f = calltape.record(lambda x: x)
        f(1)
        calltape.flush(timeout=5)
        f(2)
    """)
    assert len(found) == 1 and found[0][0] == script, found
    assert found[0][1] in ("f(1)", "calltape.flush(timeout=5)", "f(2)"), found


def test_warnings_of_calltape_run_never_point_into_calltape(tmp_path):
    (tmp_path / "prog.py").write_text("def f():\n    return 1\n\n\nf()\n")
    proc = ok(calltape_cmd(tmp_path, "run", "--energy", "prog.py",
                           env={"CALLTAPE_POWERCAP_ROOT": str(tmp_path / "none")}))
    line = next(ln for ln in proc.stderr.splitlines() if "RecordingWarning" in ln)
    assert not line.startswith(PACKAGE) and "runpy" not in line, proc.stderr
    # no user frame yet: Python names the place sys:1 (3.13: <sys>:0), never calltape's source
    assert line.startswith(("sys:1: RecordingWarning: calltape cannot read energy counters",
                            "<sys>:0: RecordingWarning: calltape cannot read energy counters"))


def test_a_bad_option_value_names_the_option():
    cases = {
        "buffer_bytes": ("64 MiB", ("buffer_bytes must be an integer number of bytes, at least"
                                    " 4 MiB (such as 64 << 20 for 64 MiB), not str '64 MiB'")),
        "flush_interval": ("1s", ("flush_interval must be a number of seconds between 0 and"
                                  " 3600 (such as 0.5), not str '1s'")),
        "max_value_bytes": ("4k", "max_value_bytes must be an integer >= 16, not str '4k'"),
    }
    for option, (value, message) in cases.items():
        with pytest.raises(TypeError) as raised:
            calltape.configure(**{option: value})
        assert str(raised.value) == message
    with pytest.raises(ValueError, match=r"buffer_bytes .* at least 4 MiB \(4194304\), not 10"):
        calltape.configure(buffer_bytes=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calltape.configure(buffer_bytes=64 << 20)  # the accepted form is accepted


def test_version_and_an_example_in_every_help(tmp_path):
    version = ok(calltape_cmd(tmp_path, "--version"))
    assert version.stdout == f"calltape {calltape.__version__}\n"
    commands = [name for name in build_parser()._subparsers._group_actions[0].choices]
    assert {"functions", "search", "show", "sessions", "replay", "make-tests",
            "run"} <= set(commands)
    for name in commands:
        text = ok(calltape_cmd(tmp_path, name, "--help")).stdout
        assert re.search(r"\nexamples?:\n  calltape " + re.escape(name) + r"\b", text), text
        if name in EXAMPLES:
            assert EXAMPLES[name].splitlines()[0] in text


def test_bash_completion_of_subcommands_and_their_options(tmp_path):
    script = ok(calltape_cmd(tmp_path, "completion", "bash")).stdout
    (tmp_path / "c.sh").write_text(script)

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        code = (f"source {tmp_path / 'c.sh'}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1};"
                " _calltape; printf '%s\\n' \"${COMPREPLY[@]}\"")
        out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True)
        return out.stdout.split()

    assert complete("calltape", "fun") == ["functions"]
    assert set(complete("calltape", "")) >= {"functions", "tree", "run", "replay", "--version"}
    assert complete("calltape", "tree", "--de") == ["--depth"]
    assert complete("calltape", "functions", "--so") == ["--sort"]
    assert complete("calltape", "run", "--fr") == ["--fresh"]
    assert "--all" in complete("calltape", "make-tests", "--")
    proc = calltape_cmd(tmp_path, "completion", "fish")
    assert proc.returncode == 2 and "invalid choice: 'fish'" in proc.stderr
