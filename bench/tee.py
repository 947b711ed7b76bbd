"""Benchmark "tee": what recording costs a call whose ``self`` holds opaque state.

more-itertools' ``_concurrent_tee`` (copied here) holds a generator, a lock and
the linked list of the stream ahead of it; its ``__next__`` is 10 million of the
12 million calls of more-itertools' own test suite.  A consumer lagging LAG
links behind the leader calls ``__next__`` plain, under cProfile, under
``calltape.monitor`` without values and with values (``max_value_depth`` 20,
as ``calltape run``, and 2).  Each case runs under ``valgrind --tool=callgrind``
twice, with N and 3N calls, and prints the instructions per call of the whole
process (the difference over 2N) and, recording values, those of the capture
of ``self`` alone (``ct_capture_other``, inclusive, from callgrind_annotate).

    python -m bench tee [--calls N]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench._measure import run_worker

SUBJECT = '''
from threading import Lock


class _concurrent_tee:  # more-itertools 11.2.1
    __slots__ = ('iterator', 'link', 'lock')

    def __init__(self, iterable):
        if isinstance(iterable, _concurrent_tee):
            self.iterator = iterable.iterator
            self.link = iterable.link
            self.lock = iterable.lock
        else:
            self.iterator = iter(iterable)
            self.link = [None, None]
            self.lock = Lock()

    def __iter__(self):
        return self

    def __next__(self):
        link = self.link
        if link[1] is None:
            with self.lock:
                if link[1] is None:
                    link[0] = next(self.iterator)
                    link[1] = [None, None]
        value, self.link = link
        return value


def producer(limit):
    for x in range(limit):
        yield x
'''

WORKER = '''
import sys
from itertools import islice

import tee_subject

n, most, mode, depth, tape = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
LAG = 200
a = tee_subject._concurrent_tee(tee_subject.producer(most + LAG + 10))
b = tee_subject._concurrent_tee(a)
for _ in islice(a, most + LAG):  # the same stream ahead of b whatever n
    pass


def work():
    for _ in islice(b, n):
        pass


if mode == "plain":
    work()
elif mode == "cProfile":
    import cProfile
    p = cProfile.Profile()
    p.enable()
    work()
    p.disable()
else:
    import calltape
    values = mode == "values"
    with calltape.monitor(include=["tee_subject"], tape=tape, args=values, result=values,
                          max_value_bytes=4096, max_value_depth=depth):
        work()
'''

CASES = (("plain", "plain", 20), ("cProfile", "cProfile", 20),
         ("calltape.monitor, args=False, result=False", "bare", 20),
         ("calltape.monitor, values, max_value_depth=20", "values", 20),
         ("calltape.monitor, values, max_value_depth=2", "values", 2))


def capture_instructions(out: Path) -> float:
    """Inclusive instructions of ct_capture_other in a callgrind output file."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--auto=no",
                           "--threshold=100", str(out)], check=True, capture_output=True,
                          text=True).stdout
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) .*:ct_capture_other ", line)
        if m:
            return float(m.group(1).replace(",", ""))
    return 0.0


def main(argv: Sequence[str] | None = None) -> int:
    """Print instructions per call of each case."""
    parser = argparse.ArgumentParser(prog="python -m bench tee", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="N (default 5000)")
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        print("bench tee: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    n = args.calls
    print(f"Python {sys.version.split()[0]}; a consumer {200} links behind; instructions per"
          f" call from {n} and {3 * n} calls under callgrind\n")
    print("| case | per call, whole process | capture of self |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "tee_subject.py").write_text(SUBJECT)
        (root / "worker.py").write_text(WORKER)
        for label, mode, depth in CASES:
            total, capture = [], []
            for k, calls in enumerate((n, 3 * n)):
                out = root / f"cg.{mode}.{depth}.{k}"
                tape = root / f"t{mode}{depth}{k}.db"
                total.append(run_worker([sys.executable, str(root / "worker.py"), str(calls),
                                         str(3 * n), mode, str(depth), str(tape)],
                                        callgrind_out=out, cwd=tmp))
                capture.append(capture_instructions(out) if mode == "values" else 0.0)
            per = (total[1] - total[0]) / (2 * n)
            cap = f"{(capture[1] - capture[0]) / (2 * n):,.0f}" if mode == "values" else ""
            print(f"| {label} | {per:,.0f} | {cap} |", flush=True)
    return 0
