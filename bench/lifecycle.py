"""Benchmark "lifecycle": what a SIGKILL loses and what a tape switch costs.

``python -m bench lifecycle`` prints, from one run:

1. the loss of a SIGKILL while producers outrun the writer: a child process
   records ``f(t, i)`` as fast as it can from 1 and from 3 threads, printing
   each thread's ident, count and the monotonic clock every 20,000 calls; after
   ``--seconds`` it is killed, and each thread's loss is the time between
   the moment it had made the calls the tape holds and the kill (the worst
   thread of each round), over ``--rounds`` rounds: median and maximum, with
   the production rate;
2. the cost of ``calltape.configure(tape=...)`` while three threads record:
   the time each of 20 switches blocks the caller (median, maximum), and the
   calls dropped (the two tapes must hold every call).

The children run in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import calltape

SPIN = textwrap.dedent("""
    import sys, threading, time, calltape
    calltape.configure(tape=sys.argv[1])
    @calltape.record
    def f(t, i):
        return i
    out = threading.Lock()
    def spin(t):
        i = 0
        me = threading.get_ident()
        while True:
            f(t, i)
            i += 1
            if i % 20000 == 0:
                now = time.monotonic()
                with out:
                    print(me, i, now, flush=True)
    for t in range(int(sys.argv[2])):
        threading.Thread(target=spin, args=(t,), daemon=True).start()
    time.sleep(600)
""")

SWITCH = textwrap.dedent("""
    import json, sys, threading, time, calltape
    tapes = sys.argv[1:3]
    calltape.configure(tape=tapes[0])
    @calltape.record
    def f(i):
        return i
    stop = threading.Event()
    made = []
    def work():
        n = 0
        while not stop.is_set():
            f(n)
            n += 1
        made.append(n)
    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    blocked = []
    for k in range(20):
        time.sleep(0.1)
        t0 = time.perf_counter()
        calltape.configure(tape=tapes[(k + 1) % 2])
        blocked.append(time.perf_counter() - t0)
    stop.set()
    for t in threads:
        t.join()
    calltape.flush(timeout=120)
    st = calltape.stats()
    print(json.dumps({"blocked": blocked, "made": sum(made), "dropped": st["dropped"]}))
""")


def kill_round(work: Path, threads: int, seconds: float) -> tuple[float, float]:
    """One SIGKILL round: (the worst thread's loss in ms, calls made per second)."""
    tape = work / f"kill-{threads}-{time.monotonic_ns()}.db"
    proc = subprocess.Popen([sys.executable, "-c", SPIN, str(tape), str(threads)],
                            stdout=subprocess.PIPE, text=True)
    progress: dict[int, list[tuple[int, float]]] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 3:  # the last line may be cut by the kill
                progress.setdefault(int(parts[0]), []).append((int(parts[1]), float(parts[2])))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(seconds)
    killed_at = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    reader.join(10)
    with calltape.open(tape) as t:  # each thread's calls, counted in C (no Call objects)
        on_tape = {ident: t.search(thread=ident).count() for ident in progress}
    worst = 0.0
    made = 0
    for t, points in progress.items():
        made += points[-1][0]
        n = on_tape.get(t, 0)
        reached = next((now for i, now in points if i >= n), killed_at)
        worst = max(worst, (killed_at - reached) * 1000)
    start = min(points[0][1] for points in progress.values())
    return worst, made / (progress and max(p[-1][1] for p in progress.values()) - start or 1)


def switch_round(work: Path) -> dict[str, float] | None:
    """The switches' figures, or None when the child died (it did before issue 10)."""
    tapes = [str(work / "a.db"), str(work / "b.db")]
    proc = subprocess.run([sys.executable, "-c", SWITCH, *tapes], capture_output=True,
                          text=True, timeout=600, check=False)
    if proc.returncode != 0:
        print(f"the switching child died (exit status {proc.returncode})")
        return None
    out = json.loads(proc.stdout.splitlines()[-1])
    on_tapes = sum(len(calltape.open(p).calls()) for p in tapes)
    return {"median_ms": statistics.median(out["blocked"]) * 1000,
            "max_ms": max(out["blocked"]) * 1000, "made": out["made"], "on_tapes": on_tapes,
            "dropped": out["dropped"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench lifecycle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="recording time before each SIGKILL")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="calltape-lifecycle-") as tmp:
        work = Path(tmp)
        print(f"calltape {calltape.__version__} from {os.path.dirname(calltape.__file__)}")
        print("| SIGKILL while recording | calls made per second | loss, median | loss, max |")
        print("|---|---:|---:|---:|")
        for threads in (1, 3):
            losses, rates = [], []
            for _ in range(args.rounds):
                loss, rate = kill_round(work, threads, args.seconds)
                losses.append(loss)
                rates.append(rate)
            print(f"| {threads} thread{'s' if threads > 1 else ''} |"
                  f" {statistics.median(rates):,.0f} | {statistics.median(losses):.0f} ms |"
                  f" {max(losses):.0f} ms |")
        s = switch_round(work)
        if s is None:
            return 1
        print()
        print("| configure(tape=...) while 3 threads record | |")
        print("|---|---:|")
        print(f"| time a switch blocks the caller, median of 20 | {s['median_ms']:.0f} ms |")
        print(f"| the same, maximum | {s['max_ms']:.0f} ms |")
        print(f"| calls made / on the two tapes / dropped | {s['made']:,.0f} /"
              f" {s['on_tapes']:,.0f} / {s['dropped']:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
