"""``python -m bench pg``: recording into PostgreSQL beside recording into SQLite.

Starts a PostgreSQL server of its own in a temporary folder (initdb and
pg_ctl from /usr/lib/postgresql/*/bin, as the ``postgres`` user when run as
root, loopback, a free port; stopped at the end), or uses ``--url``.  Then,
for each store: the calling thread's time per recorded call of
f(int, float, str) (the writer drains in its own thread), and the sustained
calls per second from 1, 2 and 4 processes recording at once (from the
first call to every call committed).  Prints a table; no goals asserted.
Then (``--read N``, default 10 million; 0 skips it) ``bench read``'s searches
on a tape of N calls in PostgreSQL, against its goals.  ``--callgrind``
instead counts the instructions per recorded call on each store, on the
calling thread and on the writer (issue 18: the calling thread within 5%).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

CHILD = textwrap.dedent("""
    import sys, time, calltape

    @calltape.record
    def f(a, b, s):
        return a

    n = int(sys.argv[1])
    calltape.flush()
    t0 = time.perf_counter_ns()
    for i in range(n):
        f(i, 1.5, "x")
    t1 = time.perf_counter_ns()
    assert calltape.flush(timeout=600)
    t2 = time.perf_counter_ns()
    print((t1 - t0) / n, t2 - t0)
""")


@contextmanager
def server() -> Iterator[str]:
    """A PostgreSQL server of our own; yields a URL of its database ``bench``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("bench pg: PostgreSQL's server is not installed (apt-get install"
                         " postgresql), or pass --url")
    bindir = os.path.dirname(found[-1])
    folder = tempfile.mkdtemp(prefix="calltape-bench-pg-", dir="/tmp")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres", "postgres")
    data = os.path.join(folder, "data")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, f"{bindir}/initdb", "-D", data, "-U", "calltape",
                    "--auth=trust", "--no-sync"], check=True, capture_output=True)
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l",
                    f"{folder}/log", "-w", "start"], check=True, capture_output=True)
    try:
        for db in ("bench", "bench_read"):  # the rates', and --read's 10 M calls
            subprocess.run([f"{bindir}/createdb", "-h", folder, "-p", str(port), "-U",
                            "calltape", db], check=True, capture_output=True)
        yield f"postgresql://calltape@127.0.0.1:{port}/bench"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                       check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def record(tape: str, procs: int, n: int, script: str) -> tuple[float, float]:
    """`procs` processes record `n` calls each onto `tape` at once.  Returns the
    calling thread's ns per call (median process) and the calls per second."""
    env = dict(os.environ, CALLTAPE_TAPE=tape)
    t0 = time.perf_counter()
    children = [subprocess.Popen([sys.executable, script, str(n)], env=env,
                                 stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    outs = [c.communicate()[0].split() for c in children]
    wall = time.perf_counter() - t0
    if any(c.returncode for c in children):
        raise SystemExit("bench pg: a recording process failed")
    per_call = sorted(float(o[0]) for o in outs)[len(outs) // 2]
    slowest = max(int(o[1]) for o in outs) / 1e9
    return per_call, procs * n / min(wall, slowest) if slowest else 0.0


CALLGRIND_CHILD = textwrap.dedent("""
    import sys, calltape

    @calltape.record
    def f(a, b, s):
        return a

    for i in range(int(sys.argv[1])):
        f(i, 1.5, "x")
    assert calltape.flush(timeout=600)
""")


def callgrind(tape: str, n: int, script: str, workdir: str) -> tuple[float, float]:
    """Instructions per recorded call onto `tape` under callgrind: the calling
    thread's and the other threads' (the writer), as (I(2n) - I(n)) / n."""
    from pathlib import Path

    from .record import read_callgrind

    counts = []
    for calls in (n, 2 * n):
        prefix = Path(workdir) / f"callgrind.{len(os.listdir(workdir))}"
        subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                        f"--callgrind-out-file={prefix}", sys.executable, script, str(calls)],
                       env=dict(os.environ, CALLTAPE_TAPE=tape, PYTHONHASHSEED="0"),
                       check=True, capture_output=True)
        counts.append(read_callgrind(prefix))
    return ((counts[1].main - counts[0].main) / n, (counts[1].others - counts[0].others) / n)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pg", description=__doc__)
    parser.add_argument("--url", help="a PostgreSQL database to record into (default: a"
                        " server of our own)")
    parser.add_argument("-n", type=int, default=300_000, help="calls per process")
    parser.add_argument("--read", type=int, default=10_000_000, metavar="N",
                        help="then bench read's searches on N calls in PostgreSQL"
                        " (0: skip; with --url, into that database)")
    parser.add_argument("--callgrind", action="store_true",
                        help="instructions per recorded call on each store under callgrind"
                        " (the calling thread's and the writer's) instead of the rates")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, (
            _given(args.url) if args.url else server()) as url:
        if args.callgrind:
            script = os.path.join(tmp, "callgrind_child.py")
            with open(script, "w") as f:
                f.write(CALLGRIND_CHILD)
            print(f"{'store':<12}{'calling thread':>16}{'writer':>10}  (instructions per call)")
            base = None
            for name, tape in (("SQLite", os.path.join(tmp, "cg.db")), ("PostgreSQL", url)):
                caller, writer = callgrind(tape, 50_000, script, tmp)
                base = caller if base is None else base
                print(f"{name:<12}{caller:>16,.0f}{writer:>10,.0f}"
                      f"  calling thread {100 * (caller - base) / base:+.1f}% of SQLite's")
            return 0
        script = os.path.join(tmp, "child.py")
        with open(script, "w") as f:
            f.write(CHILD)
        print(f"{'store':<12}{'procs':>6}{'ns/call (caller)':>18}{'calls/s':>14}")
        for procs in (1, 2, 4):
            for name, tape in (("SQLite", os.path.join(tmp, f"t{procs}.db")),
                               ("PostgreSQL", url)):
                ns, rate = record(tape, procs, args.n, script)
                print(f"{name:<12}{procs:>6}{ns:>18.0f}{rate:>14,.0f}")
        if args.read:
            from . import read

            print(f"\n== bench read on {args.read:,} calls in PostgreSQL ==", flush=True)
            return read.main(["--tape", args.url or url + "_read", "--calls", str(args.read),
                              "--repeat", "5"])
    return 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url
