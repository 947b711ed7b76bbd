"""A report of a run: results.csv, results_aggregate.csv, figures and index.html.

The numbers are C (``Tape._export("results", ...)``,
src/calltape/_native/export/export.c): the calls stream from the tape into
results.csv (one row per call) while each function's count, total, mean,
median, p95 and max duration, mean CPU time, mean memory change and errors
are aggregated, and written to results_aggregate.csv.  This module picks the
sessions, draws the figures with matplotlib (the optional extra
``pip install "calltape[report]"``) from those two files and writes a page
that opens in a browser without network access (images next to it).

Usage::

    import calltape
    r = calltape.report("calltape.db", out="report")          # the newest run
    r = calltape.report(tape, out="report", session=[3], formats=("svg", "html"))
    print(r.index)                                             # report/index.html
"""

from __future__ import annotations

import csv
import html
import os
import sys
from datetime import UTC, datetime
from typing import Any, NamedTuple

from . import Tape, TapeError
from . import open as open_tape

FORMATS = ("png", "svg", "html")
TIMELINE_CALLS = 20_000  # the timeline draws the first calls only (bounded)
HISTOGRAMS = 6  # the duration histograms: of the functions with the largest totals
HISTOGRAM_CALLS = 200_000  # at most about this many durations a histogram (every k-th call)
AGG_COLUMNS = ("function", "count", "total_s", "mean_s", "median_s", "p95_s", "max_s",
               "mean_cpu_s", "mean_memory_change_bytes", "errors")
FIGURES = {  # file stem: the caption of the page
    "time_per_function": "Execution time per function (mean, with p95 and max)",
    "timeline": "Call timeline (by thread)",
    "memory_per_function": "Memory change per function (mean RSS change per call)",
    "top_total": "Top 10 functions by total time",
    "histograms": "Duration histograms (the functions with the largest total time)",
}
INSTALL = 'the report\'s figures need matplotlib: pip install "calltape[report]"'


class ReportError(ValueError):
    """A report that cannot be made (one sentence: the file or value)."""


class ReportFiles(NamedTuple):
    """What calltape.report() wrote: the folder, the number of calls and the files."""

    directory: str
    calls: int
    files: list[str]

    @property
    def index(self) -> str | None:
        """The path of index.html, None when "html" was not among the formats."""
        path = os.path.join(self.directory, "index.html")
        return path if "index.html" in self.files else None


def _formats(formats: str | list[str] | tuple[str, ...]) -> list[str]:
    wanted = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    bad = [f for f in wanted if f not in FORMATS]
    if bad or not wanted:
        raise ReportError(f"the report formats are png, svg and html, not {','.join(bad) or '(none)'}")
    return wanted


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or ReportError telling how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ReportError(INSTALL) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _read_aggregate(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _scan_calls(path: str, top: dict[str, int]) -> tuple[list[tuple[float, float, str, str]],
                                                   dict[str, list[float]]]:
    """From results.csv: the first TIMELINE_CALLS (start, duration, thread, function) and
    the durations of the functions of `top` (name: call count), every k-th call of those
    with more than HISTOGRAM_CALLS (memory stays bounded)."""
    timeline: list[tuple[float, float, str, str]] = []
    durations: dict[str, list[float]] = {name: [] for name in top}
    step = {name: -(-count // HISTOGRAM_CALLS) for name, count in top.items()}
    seen = dict.fromkeys(top, 0)
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows, None)
        for _id, _session, thread, fn, start, duration, *_ in rows:
            if len(timeline) < TIMELINE_CALLS:
                timeline.append((float(start), float(duration), thread, fn))
            if fn in durations:
                if seen[fn] % step[fn] == 0:
                    durations[fn].append(float(duration))
                seen[fn] += 1
    return timeline, durations


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _figures(plt: Any, out: str, agg: list[dict[str, str]], calls_csv: str,
             exts: list[str], title: str) -> list[str]:
    """Draws the figures into `out` as each of `exts`; returns the stems drawn."""
    drawn: list[str] = []
    if not agg:
        return drawn

    def save(fig: Any, stem: str) -> None:
        fig.tight_layout()
        for ext in exts:
            fig.savefig(os.path.join(out, f"{stem}.{ext}"), dpi=100)
        plt.close(fig)
        drawn.append(stem)

    shown = agg[:30]  # by total time already (C sorts)
    names = [_short(r["function"]) for r in shown][::-1]
    height = max(3.0, 0.32 * len(shown) + 1.2)

    fig, ax = plt.subplots(figsize=(10, height))
    means = [float(r["mean_s"]) for r in shown][::-1]
    ax.barh(names, means, color="#4c72b0", label="mean")
    ax.scatter([float(r["p95_s"]) for r in shown][::-1], names, color="#dd8452", label="p95",
               zorder=3)
    ax.scatter([float(r["max_s"]) for r in shown][::-1], names, color="#c44e52", marker="|",
               s=120, label="max", zorder=3)
    if min(means) > 0 and max(means) / min(means) > 100:  # a wide spread: every bar visible
        ax.set_xscale("log")
    ax.set_xlabel("seconds per call" + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_title(f"{title}: execution time per function")
    ax.legend(loc="lower right")
    save(fig, "time_per_function")

    top = [r["function"] for r in agg[:HISTOGRAMS]]
    timeline, durations = _scan_calls(calls_csv, {r["function"]: int(r["count"])
                                                  for r in agg[:HISTOGRAMS]})
    fig, ax = plt.subplots(figsize=(12, max(3.0, 0.5 * len({t for _, _, t, _ in timeline}) + 2)))
    t0 = min(s for s, _, _, _ in timeline)
    lanes = {th: i for i, th in enumerate(dict.fromkeys(th for _, _, th, _ in timeline))}
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(r["function"] for r in agg)}
    bars: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for s, d, th, fn in timeline:  # one broken_barh per (thread, function): quick to draw
        bars.setdefault((th, fn), []).append((s - t0, max(d, 1e-9)))
    for (th, fn), spans in bars.items():  # outer calls first: the calls they make on top
        ax.broken_barh(spans, (lanes[th] - 0.4, 0.8), color=colours.get(fn, "grey"))
    legend = [plt.Rectangle((0, 0), 1, 1, color=colours[r["function"]]) for r in agg[:10]]
    ax.legend(legend, [_short(r["function"], 32) for r in agg[:10]], fontsize=7,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_yticks(list(lanes.values()), [f"thread {th}" for th in lanes])
    ax.set_xlabel("seconds since the first call")
    cut = f" (the first {TIMELINE_CALLS:,} calls)" if len(timeline) == TIMELINE_CALLS else ""
    ax.set_title(f"{title}: call timeline{cut}")
    save(fig, "timeline")

    mem = [r for r in shown if r["mean_memory_change_bytes"]]
    if mem:
        fig, ax = plt.subplots(figsize=(10, max(3.0, 0.32 * len(mem) + 1.2)))
        ax.barh([_short(r["function"]) for r in mem][::-1],
                [float(r["mean_memory_change_bytes"]) / 1024 for r in mem][::-1], color="#55a868")
        ax.set_xlabel("mean RSS change per call (KiB)")
        ax.set_title(f"{title}: memory change per function")
        save(fig, "memory_per_function")

    ten = agg[:10]
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.4 * len(ten) + 1.2)))
    ax.barh([_short(r["function"]) for r in ten][::-1], [float(r["total_s"]) for r in ten][::-1],
            color="#8172b3")
    ax.set_xlabel("total seconds")
    ax.set_title(f"{title}: top {len(ten)} functions by total time")
    save(fig, "top_total")

    cols = min(3, len(top))
    rows = (len(top) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols + 1, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, top, strict=False):
        ax.hist([d * 1e3 for d in durations[name]], bins=30, color="#64b5cd")
        ax.set_title(_short(name, 36), fontsize=9)
        ax.set_xlabel("ms")
    for ax in list(axes.flat)[len(top):]:
        ax.axis("off")
    fig.suptitle(f"{title}: duration histograms")
    save(fig, "histograms")
    return drawn


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;
color:#222}table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ccc;
padding:.25em .5em}td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#eee}
tbody tr:nth-child(odd){background:#fafafa}img{max-width:100%;border:1px solid #ddd}
figure{margin:1.5em 0}.wide{overflow-x:auto}"""


def _html(title: str, agg: list[dict[str, str]], calls: int, sessions: list[Any],
          figures: list[str], ext: str | None, note: str | None) -> str:
    e = html.escape
    when = ", ".join(f"session {s.id} ({e(' '.join(map(str, s.argv or [])) or '?')}, "
                     f"{s.start:%Y-%m-%d %H:%M:%S})" for s in sessions) or "none"
    head = "".join(f"<th>{e(c)}</th>" for c in AGG_COLUMNS)
    body = "\n".join(
        "<tr>" + "".join(f'<td{"" if c == "function" else " class=n"}>{e(r[c])}</td>'
                         for c in AGG_COLUMNS) + "</tr>" for r in agg)
    figs = "\n".join(f'<figure><img src="{stem}.{ext}" alt="{e(FIGURES[stem])}">'
                     f"<figcaption>{e(FIGURES[stem])}</figcaption></figure>" for stem in figures)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{e(title)}</h1>
<p>{calls:,} call{'s' if calls != 1 else ''} from {when}.
One row per call: <a href="results.csv">results.csv</a>;
per function: <a href="results_aggregate.csv">results_aggregate.csv</a>.</p>
<h2>Per function (by total time)</h2>
<div class="wide"><table id="aggregate"><thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody></table></div>
<h2>Figures</h2>
{f'<p>{e(note)}</p>' if note else ''}{figs}
<p><small>Made by calltape on {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC.</small></p>
</body></html>
"""


def report(tape: Tape | str | os.PathLike[str], out: str | os.PathLike[str] = "calltape-report",
           *, session: int | list[int] | tuple[int, ...] | None = None,
           since: datetime | float | None = None, until: datetime | float | None = None,
           title: str | None = None,
           formats: str | list[str] | tuple[str, ...] = ("png", "html"),
           progress: bool | None = None) -> ReportFiles:
    """Write a report of the calls of `session` (an id or ids; by default the
    newest run, tape.last_run(), unless since/until choose a time range of
    every session) into the folder `out`: results.csv, results_aggregate.csv,
    the figures as png and/or svg and index.html (formats "png", "svg",
    "html"; html alone draws png figures).  `progress` (default: when
    stderr is a terminal) shows each stage on stderr.

    >>> calltape.report("calltape.db", out="report").index
    'report/index.html'

    Raises ReportError (a ValueError: a format, no session, matplotlib
    missing), TapeError for a tape that cannot be read and OSError for a
    folder that cannot be written.
    """
    wanted = _formats(formats)
    if not isinstance(tape, Tape):
        with open_tape(tape) as opened:
            return report(opened, out, session=session, since=since, until=until, title=title,
                          formats=wanted, progress=progress)
    show = sys.stderr.isatty() if progress is None else progress

    def stage(text: str) -> None:
        if show:
            print(f"calltape: report: {text}", file=sys.stderr, flush=True)

    exts = [f for f in wanted if f != "html"] or ["png"]
    plt = _pyplot()
    if session is None and since is None and until is None:
        ids: list[int] | None = tape.last_run()
        if not ids:
            raise ReportError(f"there is no session in {tape.path} to report on")
    else:
        ids = [session] if isinstance(session, int) else list(session) if session is not None else None
    sessions = sorted((s for s in tape.sessions() if ids is None or s.id in ids), key=lambda s: s.id)
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    calls_csv = os.path.join(out, "results.csv")
    agg_csv = os.path.join(out, "results_aggregate.csv")
    stage(f"writing {calls_csv} and {agg_csv}")
    with open(calls_csv, "wb") as f, open(agg_csv, "wb") as g:
        n = tape._export("results", f.fileno(), [], session=ids, since=since, until=until,
                         aggregate_fd=g.fileno())
    agg = _read_aggregate(agg_csv)
    title = title or ("calltape report: " + (" ".join(map(str, sessions[0].argv or []))
                                             if len(sessions) == 1 else f"{len(sessions)} sessions"))
    stage(f"{n:,} calls; drawing the figures ({', '.join(exts)})")
    figures = _figures(plt, out, agg, calls_csv, exts, title)
    files = ["results.csv", "results_aggregate.csv"] + [f"{s}.{x}" for s in figures for x in exts]
    if "html" in wanted:
        note = None if figures else "No calls were recorded in this selection: no figures."
        page = _html(title, agg, n, sessions, figures, exts[0], note)
        with open(os.path.join(out, "index.html"), "w", encoding="utf-8") as f:
            f.write(page)
        files.append("index.html")
    return ReportFiles(out, n, files)


__all__ = ["FORMATS", "ReportError", "ReportFiles", "TapeError", "report"]
