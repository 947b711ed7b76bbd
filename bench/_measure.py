"""What the micro-benchmarks share: one worker run, timed or counted.

    ns = run_worker([python, "-c", WORKER, "case"])                  # the worker's last JSON line
    n = run_worker(cmd, callgrind_out=Path("cg.case"), env=env)      # instructions under callgrind

The worker prints a JSON line ``{"ns": ...}`` last; under callgrind the whole
process's instruction count is returned instead (``PYTHONHASHSEED=0``, so
every run builds the same dicts), and the caller subtracts two runs of
different lengths to get a per-call figure.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_worker(cmd: Sequence[str], callgrind_out: Path | None = None,
               env: Mapping[str, str] | None = None, cwd: str | None = None) -> float:
    """ns per call the worker printed, or with `callgrind_out` the instructions
    of its whole run (counted by ``valgrind --tool=callgrind`` into that file)."""
    env = dict(os.environ if env is None else env)
    if callgrind_out is None:
        proc = subprocess.run(list(cmd), check=True, capture_output=True, text=True, env=env,
                              cwd=cwd)
        return float(json.loads(proc.stdout.splitlines()[-1])["ns"])
    env["PYTHONHASHSEED"] = "0"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind_out}",
                    *cmd], check=True, capture_output=True, text=True, env=env, cwd=cwd)
    for line in callgrind_out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return float(line.split()[1])
    raise RuntimeError(f"callgrind wrote no totals in {callgrind_out}")


def peer_python(given: str | None, env: str, probe: str) -> str | None:
    """The first of ``given``, ``$env`` and this interpreter that runs ``probe``
    (a ``-c`` program) without error, or None: how a bench finds the
    interpreter of a peer installed in its own venv. A path that is not a
    program is said in one line and skipped."""
    import sys

    for cand in (given, os.environ.get(env), sys.executable):
        if not cand:
            continue
        try:
            done = subprocess.run([cand, "-c", probe], capture_output=True, check=False)
        except OSError as exc:
            print(f"(peer interpreter {cand}: {exc.strerror})")
            continue
        if done.returncode == 0:
            return cand
    return None
