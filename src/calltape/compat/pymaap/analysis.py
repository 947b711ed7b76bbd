"""``pymaap.analysis``: ``analysis(args)``, the results command."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from datetime import datetime
from pathlib import Path


def _time(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise SystemExit(f"results: {flag} must be a time like 2025-01-01 12:00:00, not {text!r}"
                         ) from None


def analysis(args: list[str] | None = None) -> Path | None:
    """Aggregates and plots of the newest run recorded in LOGDIR (or the times given).

    The run is the tape's newest run (``LOGDIR/calltape.db``: sessions are explicit, no
    guessing from clusters of timestamps); ``--start-time``/``--end-time`` select by time.
    Writes ``figs/<end>_<tag>/``: results.csv, results_aggregate.csv (PyMAAP's
    columns), filtered_log_lines.log, the figures, README.txt.  Returns the folder.
    """
    import calltape

    p = argparse.ArgumentParser(prog="python -m calltape.compat.pymaap.results",
                                description="Aggregate and plot the newest run's calls.")
    p.add_argument("--logdir", required=True)
    p.add_argument("--subtitle")
    p.add_argument("--tag", default="run")
    p.add_argument("--start-time")
    p.add_argument("--end-time")
    a = p.parse_args(args)
    since, until = _time(a.start_time, "--start-time"), _time(a.end_time, "--end-time")
    tape_path = Path(a.logdir) / "calltape.db"
    if not tape_path.exists():
        raise SystemExit(f"results: {tape_path} does not exist: record with"
                         " calltape.compat.pymaap's Timer first")
    tape = calltape.open(tape_path)
    if since or until:
        calls = list(tape.search(since=since, until=until, order="oldest"))
    else:
        calls = []
        for s in tape.last_run():
            calls += list(tape.search(session=s))
    if not calls:
        print("results: no calls in the selected run", file=sys.stderr)
        return None
    end = max(c.end for c in calls).astimezone()
    out = Path("figs") / f"{end.strftime('%Y-%m-%d_%H-%M-%S')}_{a.tag}"
    out.mkdir(parents=True, exist_ok=True)
    start = min(c.start for c in calls).astimezone()
    subtitle = a.subtitle if a.subtitle is not None else (
        f"{start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S}")
    if subtitle.lower() == "none":
        subtitle = ""
    report = calltape.report(tape_path, out=str(out / "_calltape"), title=subtitle or "run",
                             session=sorted({c.session for c in calls}), formats=("png",))
    with open(out / "_calltape" / "results_aggregate.csv", newline="") as agg:
        rows = list(csv.DictReader(agg))
    with open(out / "results_aggregate.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Function", "Perf Duration (s)_count", "Perf Duration (s)_sum",
                    "Perf Duration (s)_mean", "Perf Duration (s)_max", "CPU Delta_mean",
                    "Memory Delta (MB)_mean"])
        for r in rows:
            mem = r["mean_memory_change_bytes"]
            w.writerow([r["function"].rsplit(".", 1)[-1], r["count"], r["total_s"], r["mean_s"],
                        r["max_s"], r["mean_cpu_s"], float(mem) / 1e6 if mem else ""])
    os.replace(out / "_calltape" / "results.csv", out / "results.csv")
    uuids = {c.uuid for c in calls}
    with open(out / "filtered_log_lines.log", "w") as f:
        for log in sorted(Path(a.logdir).glob("timing.log*")):
            if log.suffix == ".lock":
                continue
            with open(log, errors="replace") as lines:
                for line in lines:
                    try:
                        if json.loads(line).get("uuid") in uuids:
                            f.write(line)
                    except ValueError:
                        continue
    names = {"time_per_function": "execution_time_per_function", "timeline": "function_calls_over_time",
             "memory_per_function": "memory_change_per_function_call",
             "top_total": "top10_functions_by_total_time", "histograms": "hist_perf_duration"}
    for src, dst in names.items():
        f = out / "_calltape" / f"{src}.png"
        if f.exists():
            os.replace(f, out / f"{dst}.png")
    with open(out / "README.txt", "w") as f:
        f.write(f"=== Timing Analysis Metadata ===\nTape: {tape_path}\nCalls: {report.calls}\n"
                f"\nTime window: {start} -> {end}\nSubtitle:    {subtitle}\n")
    print(f"results: {len(calls)} calls written to {out}")
    return out
