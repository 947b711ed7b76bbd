"""Benchmark "soak": memory over a long recording, and what SIGKILLs lose.

``python -m bench soak`` prints, from one run:

1. memory: a child records ``--calls`` calls (default 20 million) of
   ``f(t, i)`` from 3 threads as fast as they can, with the default
   ``buffer_bytes`` (64 MiB); the parent reads the child's RSS
   (``/proc/PID/status``) every second.  The figure is the peak RSS above
   the child's RSS before its first call, against the goal of issue 14: at
   most the buffer plus 20 MB;
2. loss: ``--kills`` rounds (default 20) of the same child recording at full
   speed for ``--seconds`` and killed with SIGKILL; each round's loss is the
   time between the moment the worst thread had made the calls the tape
   holds and the kill (the child's own counters, as ``bench lifecycle``
   measures it): median and maximum, against one flush interval (100 ms).

The children run in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from bench.lifecycle import kill_round

BUFFER_MB = 64  # calltape's default buffer_bytes, in MiB
GOAL_MB = 20

SOAK = textwrap.dedent("""
    import json, sys, threading, time, calltape
    calltape.configure(tape=sys.argv[1])
    @calltape.record
    def f(t, i):
        return i
    n = int(sys.argv[2]) // 3
    go = threading.Event()
    def spin(t):
        go.wait()
        for i in range(n):
            f(t, i)
    threads = [threading.Thread(target=spin, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.monotonic()
    go.set()
    for th in threads:
        th.join()
    made = time.monotonic() - t0
    calltape.flush(timeout=600)
    print(json.dumps({"made": made, "stored": time.monotonic() - t0,
                      "dropped": calltape.stats()["dropped"]}), flush=True)
""")


def rss_mb(pid: int) -> float | None:
    """The resident set of process `pid` in MiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def soak(work: Path, calls: int) -> dict[str, float]:
    """The memory run: baseline, peak and seconds, calls per second, dropped."""
    tape = work / "soak.db"
    proc = subprocess.Popen([sys.executable, "-c", SOAK, str(tape), str(calls)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdout.readline()  # "ready": imported, configured, threads waiting
    base = rss_mb(proc.pid) or 0.0
    samples = []
    proc.stdin.write("\n")
    proc.stdin.flush()
    while proc.poll() is None:
        r = rss_mb(proc.pid)
        if r is not None:
            samples.append(r)
        time.sleep(1.0)
    out = json.loads(proc.stdout.read().splitlines()[-1])
    return {"base": base, "peak": max(samples, default=base), "samples": len(samples),
            "made": out["made"], "stored": out["stored"], "rate": calls / out["made"],
            "dropped": out["dropped"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="recording time before each SIGKILL")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="calltape-soak-") as tmp:
        work = Path(tmp)
        s = soak(work, args.calls)
        grown = s["peak"] - s["base"]
        print(f"| {args.calls:,} calls from 3 threads | |")
        print("|---|---:|")
        print(f"| calls made in / all on the tape after | {s['made']:.1f} s /"
              f" {s['stored']:.1f} s |")
        print(f"| calls made per second | {s['rate']:,.0f} |")
        print(f"| RSS before the first call / peak ({s['samples']} samples) |"
              f" {s['base']:.1f} / {s['peak']:.1f} MiB |")
        print(f"| grown / goal (buffer {BUFFER_MB} MiB + {GOAL_MB} MB) |"
              f" {grown:.1f} / {BUFFER_MB + GOAL_MB / 1.048576:.1f} MiB"
              f" {'PASS' if grown <= BUFFER_MB + GOAL_MB / 1.048576 else 'FAIL'} |")
        print(f"| dropped calls | {s['dropped']:,} |")
        if args.kills <= 0:
            return 0
        losses, rates = [], []
        for _ in range(args.kills):
            loss, rate = kill_round(work, 3, args.seconds)
            losses.append(loss)
            rates.append(rate)
        print()
        print(f"| {args.kills} SIGKILLs, 3 threads at full speed | |")
        print("|---|---:|")
        print(f"| calls made per second, median | {statistics.median(rates):,.0f} |")
        print(f"| loss, median / max | {statistics.median(losses):.0f} ms /"
              f" {max(losses):.0f} ms |")
        print(f"| rounds within one flush interval (100 ms) |"
              f" {sum(x <= 100 for x in losses)} of {len(losses)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
