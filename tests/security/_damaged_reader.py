"""Reads damaged tapes whole, one after another, for test_damaged_tapes.py.

    python _damaged_reader.py CALL_ID,CALL_ID,... TAPE ...

For each tape it prints ``start NAME`` (so that a crash or a hang names the
tape it happened on), then one JSON line: how reading it whole ended
(``ok`` with a digest of everything read, ``tape_error`` with the message,
or ``other`` with the exception type and traceback) and what the CLI's
``functions``, ``sessions``, ``search``, ``show ID`` and ``show ID --json``
did (exit status and stderr; the tapes take the call ids given in turn).  A
tape that takes longer than PER_TAPE_SECONDS makes faulthandler print every
thread's traceback and exit: a hang.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import io
import json
import sys
import traceback

import calltape
from calltape import cli

PER_TAPE_SECONDS = 30
ALLOW = ["damaged_subject"]


def read_whole(path: str) -> tuple[str, str]:
    """Everything the reader gives for the tape, as text: what the tape
    holds (sessions, functions, threads, every call and its values, calls by
    id) and, apart, what the indexes that skip segments answer (searches and
    children), which no checksum covers."""
    out = []
    found = []
    with calltape.open(path, allow=ALLOW) as t:
        for s in t.sessions():
            out.append(repr((s.id, s.pid, s.ppid, s.parent, s.host, s.argv, s.python, s.version,
                             s.start, s.end, s.mpi_rank, s.counters)))
        for f in sorted(t.functions(), key=lambda f: f.id):
            out.append(repr((f.id, f.module, f.qualname, f.file, f.line, f.parameters, f.kinds,
                             f.defaults, f.calls, f.raised, f.total, f.min, f.max)))
        out.append(repr(sorted((d["session"], d["index"], d["ident"], d["name"])
                               for d in t.threads())))
        calls = t.calls()
        for c in calls:
            exc = c.exception
            out.append(repr((c.id, c.module, c.qualname, c.session, c.parent, c.depth,
                             c.start_ns, c.duration_ns, c.start, c.end, c.outcome, c.thread,
                             c.thread_name, c.cpu_time, c.memory, c.args, sorted(c.defaults),
                             c.bound, c.result, exc, exc and exc.traceback, c.locals, c.globals,
                             c.yielded, c.preview, repr(c))))
        found.append(repr([c.id for c in t.search(function="price", args={"qty": 3})]))
        found.append(repr([c.id for c in t.search(min_duration=0, limit=5)]))
        found.append(repr([c.id for c in t.search(order="oldest", outcome="raised")]))
        found.append(repr([(c.id, len(c.children())) for c in t.search(function="outer")]))
        for c in calls[:: max(1, len(calls) // 8)]:
            out.append(repr(t.call(c.id).args))
        out.append(repr(t).replace(repr(path), "TAPE"))
    return "\n".join(out), "\n".join(found)


def run_cli(argv: list[str]) -> dict:
    """calltape's CLI in this process: its exit status and stderr."""
    err, outs = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(outs):
        try:
            rc = cli.main(argv)
        except BaseException as exc:  # the CLI must not raise: report it
            return {"argv": argv, "rc": None, "raised": traceback.format_exception(exc)}
    return {"argv": argv, "rc": rc, "stderr": err.getvalue()}


def read_one(path: str, call_id: int) -> dict:
    result: dict = {"tape": path}
    try:
        text, found = read_whole(path)
        result["status"] = "ok"
        result["digest"] = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        result["found"] = hashlib.sha256(found.encode("utf-8", "surrogatepass")).hexdigest()
    except calltape.TapeError as exc:
        result["status"] = "tape_error"
        result["message"] = str(exc)
    except BaseException as exc:
        result["status"] = "other"
        result["type"] = type(exc).__name__
        result["traceback"] = traceback.format_exception(exc)
    allow = [a for name in ALLOW for a in ("--allow", name)]
    result["cli"] = [run_cli([cmd, path, *allow]) for cmd in ("functions", "sessions", "search")]
    result["cli"].append(run_cli(["show", path, str(call_id), *allow]))
    result["cli"].append(run_cli(["show", path, str(call_id), "--json", *allow]))
    return result


def main(argv: list[str]) -> int:
    call_ids = [int(i) for i in argv[0].split(",")]
    for n, path in enumerate(argv[1:]):
        print("start", path, flush=True)
        faulthandler.dump_traceback_later(PER_TAPE_SECONDS, exit=True)
        result = read_one(path, call_ids[n % len(call_ids)])
        faulthandler.cancel_dump_traceback_later()
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
