"""calltape report / calltape.report: a tape recorded by a real program (a
subprocess under `calltape run --cpu --memory`, two threads, a raising
function) reported on; results.csv and results_aggregate.csv read back and
checked against tape.calls(); the figures present and non-empty; index.html
loaded in headless Chromium (every image displayed, the table holding the
aggregate CSV's numbers); the default selection (the newest run); the user
errors, each one sentence.
"""

import csv
import math
import os
import shutil
import statistics
import subprocess
import sys
from html.parser import HTMLParser

import pytest

import calltape

CALLTAPE = os.path.join(os.path.dirname(sys.executable), "calltape")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PROGRAM = '''
import sys
import threading

def leaf(x):
    return [0] * (x * 100)

def mid(n):
    return sum(len(leaf(i)) for i in range(n))

def bad(password):
    raise ValueError("no " + str(len(password)))

def work(rounds):
    for k in range(rounds):
        mid(8)
        try:
            bad("secret")
        except ValueError:
            pass

t = threading.Thread(target=work, args=(int(sys.argv[1]),), name="worker")
t.start()
work(int(sys.argv[1]))
t.join()
'''

FIGURES = ("time_per_function", "timeline", "memory_per_function", "top_total", "histograms")


def run(*args, cwd=None, env=None):
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=300,
                          env=env)


def one_sentence(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("calltape: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A tape with two runs (40 then 60 rounds) and the report of the newest."""
    d = tmp_path_factory.mktemp("report")
    (d / "prog.py").write_text(PROGRAM)
    tape = str(d / "t.db")
    for rounds in ("40", "60"):
        p = run(CALLTAPE, "run", "--quiet", "--cpu", "--memory", "--tape", tape, "prog.py", rounds,
                cwd=d)
        assert p.returncode == 0, p.stderr
    out = d / "rep"
    p = run(CALLTAPE, "report", tape, "--out", str(out), "--format", "png,svg,html",
            "--title", "Test <report>")
    assert p.returncode == 0, p.stderr
    assert "reported" in p.stderr and "index.html" in p.stderr
    with calltape.open(tape) as t:  # open while the tests read the calls' values
        last = t.last_run()
        calls = [c for c in t.calls() if c.session in last]
        yield d, tape, out, calls, t.calls()


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_results_csv_is_the_newest_runs_calls(recorded):
    _, _, out, calls, everything = recorded
    rows = read_csv(out / "results.csv")
    assert len(rows) == len(calls) == 2 * 60 * (1 + 1 + 8 + 1) + 2 < len(everything)
    by_id = {c.id: c for c in calls}
    assert [int(r["id"]) for r in rows] == sorted(by_id)
    for r in rows:
        c = by_id[int(r["id"])]
        assert r["function"] == f"{c.module}.{c.qualname}"
        assert int(r["session"]) == c.session and int(r["thread"]) == c.thread
        assert r["start"] == f"{c.start_ns // 10**9}.{c.start_ns % 10**9:09d}"
        assert r["duration_s"] == f"{c.duration_ns // 10**9}.{c.duration_ns % 10**9:09d}"
        assert math.isclose(float(r["cpu_s"]), c.cpu_time, abs_tol=1e-9)
        assert int(r["memory_change_bytes"]) == c.memory["rss_after"] - c.memory["rss_before"]
        assert r["outcome"] == c.outcome


def p95(durations):
    s = sorted(durations)
    return s[math.ceil(0.95 * len(s)) - 1]


def test_aggregate_csv_matches_the_tape(recorded):
    _, _, out, calls, _ = recorded
    rows = read_csv(out / "results_aggregate.csv")
    groups = {}
    for c in calls:
        groups.setdefault(f"{c.module}.{c.qualname}", []).append(c)
    assert {r["function"] for r in rows} == set(groups)
    totals = [float(r["total_s"]) for r in rows]
    assert totals == sorted(totals, reverse=True)  # by total, the largest first
    for r in rows:
        g = groups[r["function"]]
        d = [c.duration_ns / 1e9 for c in g]
        assert int(r["count"]) == len(g)
        assert math.isclose(float(r["total_s"]), sum(d), abs_tol=1e-8)
        assert math.isclose(float(r["mean_s"]), statistics.mean(d), abs_tol=1e-9)
        assert math.isclose(float(r["median_s"]), statistics.median(d), abs_tol=1e-9)
        assert math.isclose(float(r["p95_s"]), p95(d), abs_tol=1e-9)
        assert math.isclose(float(r["max_s"]), max(d), abs_tol=1e-9)
        assert math.isclose(float(r["mean_cpu_s"]), statistics.mean(c.cpu_time for c in g),
                            abs_tol=1e-8)
        mem = statistics.mean(c.memory["rss_after"] - c.memory["rss_before"] for c in g)
        assert math.isclose(float(r["mean_memory_change_bytes"]), mem, abs_tol=0.06)
        assert int(r["errors"]) == sum(c.outcome == "raised" for c in g)
    assert int(next(r for r in rows if r["function"] == "__main__.bad")["errors"]) == 120


def test_figures_are_present_and_not_empty(recorded):
    out = recorded[2]
    for stem in FIGURES:
        png = (out / f"{stem}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, stem
        svg = (out / f"{stem}.svg").read_text()
        assert "<svg" in svg and len(svg) > 5000, stem


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.rows, self.body = [], [], {}
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "body":
            self.body = a
        elif tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td":
            self.rows[-1].append(self._cell)
            self._cell = None


PROBE = ("<script>window.addEventListener('load', () => { document.body.dataset.images ="
         " Array.from(document.images).map(i => i.complete && i.naturalWidth > 0 ?"
         " 'shown' : 'broken:' + i.src).join(' '); });</script>")


def test_index_html_in_headless_chromium(recorded):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    out = recorded[2]
    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # works without network
    assert "Test &lt;report&gt;" in page
    # the page as written, plus a probe that marks each image as displayed or broken
    probe = out / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    # the browser is not ours: without the sanitizers CI preloads into Python (under
    # them Chromium does not start in time)
    browser_env = {k: v for k, v in os.environ.items()
                   if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}
    p = run(CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
            "--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), env=browser_env)
    assert p.returncode == 0, p.stderr
    dom = _Page()
    dom.feed(p.stdout)
    assert {i["src"] for i in dom.imgs} == {f"{s}.png" for s in FIGURES}
    for img in dom.imgs:
        assert (out / img["src"]).stat().st_size > 0
    assert dom.body.get("data-images", "").split() == ["shown"] * len(FIGURES)
    table = [r for r in dom.rows if r]
    want = [list(r.values()) for r in read_csv(out / "results_aggregate.csv")]
    assert table == want


def test_python_api_session_and_formats(recorded, tmp_path):
    _, tape, _, _, everything = recorded
    first = min(c.session for c in everything)
    r = calltape.report(tape, out=tmp_path / "r", session=first, formats=("svg",))
    assert r.calls == len([c for c in everything if c.session == first]) and r.index is None
    assert sorted(os.listdir(tmp_path / "r")) == sorted(r.files)
    assert "time_per_function.svg" in r.files and "time_per_function.png" not in r.files
    # a time range without a session: every session's calls started in it
    r = calltape.report(tape, out=tmp_path / "all", since=0, formats="html", progress=False)
    assert r.calls == len(everything) and os.path.exists(r.index)


def test_progress_on_stderr(recorded, tmp_path, capsys):
    tape = recorded[1]
    calltape.report(tape, out=tmp_path / "r", formats="html", progress=True)
    err = capsys.readouterr().err.splitlines()
    assert [ln.split(":")[1] for ln in err] == [" report"] * 2
    assert "results.csv" in err[0] and "drawing the figures (png)" in err[1]
    calltape.report(tape, out=tmp_path / "q", formats="html")  # stderr is no terminal here
    assert capsys.readouterr().err == ""


def test_cli_time_range_reports_every_session(recorded, tmp_path):
    _, tape, _, _, everything = recorded
    p = run(CALLTAPE, "report", tape, "--since", "1h", "--out", str(tmp_path / "r"),
            "--format", "html")
    assert p.returncode == 0, p.stderr
    assert f"reported {len(everything):,} calls" in p.stderr
    rows = read_csv(tmp_path / "r" / "results.csv")
    assert len({r["session"] for r in rows}) == 2 and len(rows) == len(everything)
    page = (tmp_path / "r" / "index.html").read_text()
    assert "2 sessions" in page and "timeline.png" in page


def test_without_cpu_and_memory(tmp_path):
    (tmp_path / "prog.py").write_text(PROGRAM)
    tape = str(tmp_path / "plain.db")
    p = run(CALLTAPE, "run", "--quiet", "--tape", tape, "prog.py", "5", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    r = calltape.report(tape, out=tmp_path / "r", title="plain")
    assert r.calls == 2 * 5 * 11 + 2
    rows = read_csv(tmp_path / "r" / "results.csv")
    assert {row["cpu_s"] for row in rows} == {""} == {row["memory_change_bytes"] for row in rows}
    agg = read_csv(tmp_path / "r" / "results_aggregate.csv")
    assert {a["mean_cpu_s"] for a in agg} == {""} == {a["mean_memory_change_bytes"] for a in agg}
    # no memory figure without memory; the others are there
    assert "memory_per_function.png" not in r.files and "timeline.png" in r.files
    assert not (tmp_path / "r" / "memory_per_function.png").exists()
    assert "memory_per_function" not in open(r.index).read()


def test_errors_are_one_sentence(recorded, tmp_path):
    _, tape, _, _, _ = recorded
    msg = one_sentence(run(CALLTAPE, "report", tape, "--out", str(tmp_path / "x"),
                           "--format", "png,pdf"))
    assert "png, svg and html, not pdf" in msg
    msg = one_sentence(run(CALLTAPE, "report", tape, "--session", "999"))
    assert "no session 999" in msg
    empty = tmp_path / "empty.db"  # a tape whose sessions were all pruned
    shutil.copy(tape, empty)
    assert run(CALLTAPE, "prune", str(empty), "--older-than", "2100-01-01").returncode == 0
    msg = one_sentence(run(CALLTAPE, "report", str(empty), "--out", str(tmp_path / "e")))
    assert "no session" in msg and "empty.db" in msg
    (tmp_path / "file").write_text("")
    msg = one_sentence(run(CALLTAPE, "report", tape, "--out", str(tmp_path / "file")))
    assert "cannot write the report into" in msg and "file" in msg
    # without matplotlib: one sentence telling how to install it
    code = ("import sys; sys.modules['matplotlib'] = None; from calltape.cli import main;"
            f" sys.exit(main(['report', {tape!r}, '--out', {str(tmp_path / 'm')!r}]))")
    msg = one_sentence(run(sys.executable, "-c", code))
    assert 'pip install "calltape[report]"' in msg
