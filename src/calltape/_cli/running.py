"""``calltape run``: its own parser (options before the program, the rest the
program's), and the hand-off to calltape._run."""

from __future__ import annotations

import argparse
import os
import sys

from .. import TapeError, _native
from .common import UsageError

TYPE_CHECKING = False  # typing is not loaded: every command pays its import


_RUN_VALUED = {"--tape", "--retain", "--include", "--exclude", "--max-depth", "--sample",
               "--max-value-bytes", "--max-value-depth"}


def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calltape run",
        usage="calltape run [options] (script.py | -m module) [args for the program ...]",
        description="Run a Python program as `python` would, recording the calls of its own"
                    " code (the script's directory, or the package of -m) onto a tape. At exit"
                    " one summary line goes to stderr; `calltape functions` shows the rest.",
        epilog="Options go before the program; everything after it is the program's own.\n\n"
               "examples:\n  calltape run --cpu --locals app.py --port 8080\n"
               "  calltape run --tape /tmp/t.db --include mylib -m app.main",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tape", metavar="PATH",
                   help="the tape file (default: $CALLTAPE_TAPE, then ./calltape.db)")
    p.add_argument("--retain", metavar="RULES",
                   help="retention as it records: older_than=7d,max_size=2GB,keep_sessions=10"
                        " (any of them; as configure(retain=...) and $CALLTAPE_RETAIN)")
    p.add_argument("--fresh", action="store_true",
                   help="start a new tape instead of adding this run to it (the old tape"
                        " and its -wal and -shm files are removed)")
    p.add_argument("--include", action="append", default=[], metavar="PKG",
                   help="also record this package or module (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="do not record this module, or module.qualname glob (repeatable)")
    p.add_argument("--no-args", action="store_true", help="do not record arguments")
    p.add_argument("--no-result", action="store_true", help="do not record return values")
    p.add_argument("--cpu", action="store_true", help="record the thread CPU time of calls")
    p.add_argument("--memory", action="store_true", help="record RSS before and after calls")
    p.add_argument("--energy", action="store_true",
                   help="record RAPL package and DRAM energy (Linux powercap) of calls")
    p.add_argument("--locals", action="store_true",
                   help="record each call's local variables at its return or raise")
    p.add_argument("--globals", action="store_true",
                   help="record the module globals each function reads, at its start")
    p.add_argument("--max-depth", type=int, default=0, metavar="N",
                   help="record no call nested deeper than N recorded calls (0: no limit)")
    p.add_argument("--sample", type=int, default=1, metavar="N",
                   help="record one call in N of each function (default 1: all)")
    p.add_argument("--max-value-bytes", type=int, default=4096, metavar="N",
                   help="record a value larger than N bytes once encoded as Truncated, and stop"
                        " encoding it there (default 4096)")
    p.add_argument("--max-value-depth", type=int, default=20, metavar="N",
                   help="record what a value holds N levels down as Unencodable (nested too"
                        " deeply), and stop there (default 20)")
    p.add_argument("--quiet", action="store_true", help="no summary line at exit")
    return p


def split_run_argv(argv: list[str]) -> tuple[list[str], str | None, bool, list[str]]:
    """Splits ``calltape run`` arguments into (options, target, is_module, program args)."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-m":
            if i + 1 == len(argv):
                raise UsageError("-m needs a module name, as in: calltape run -m package.main")
            rest = argv[i + 2:]
            return argv[:i], argv[i + 1], True, rest[1:] if rest[:1] == ["--"] else rest
        if a == "--":
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        i += 2 if a in _RUN_VALUED else 1
    if i >= len(argv):
        return argv, None, False, []
    rest = argv[i + 1:]
    return [a for a in argv[:i] if a != "--"], argv[i], False, rest[1:] if rest[:1] == ["--"] else rest


def run_main(argv: list[str]) -> int:
    """``calltape run``: the program's own exit status, 2 for our usage errors."""
    from .._run import RunError, run

    parser = build_run_parser()
    try:
        options, target, is_module, program_args = split_run_argv(argv)
    except UsageError as exc:
        parser.error(str(exc))
    args = parser.parse_args(options)
    if target is None:
        parser.error("name a script or -m module to run")
    try:  # the same check, and message, as monitor() and @calltape.record
        _native.check_options(tape=args.tape, max_depth=args.max_depth, sample=args.sample,
                              max_value_bytes=args.max_value_bytes)
        if args.retain is not None:
            _native.configure(retain=args.retain)
            os.environ["CALLTAPE_RETAIN"] = args.retain  # the child processes' too
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if args.max_value_depth < 1:
        parser.error(f"--max-value-depth must be at least 1, not {args.max_value_depth}")
    try:
        return run(target, module=is_module, argv=program_args, tape=args.tape,
                   include=args.include, exclude=args.exclude, args=not args.no_args,
                   result=not args.no_result, cpu=args.cpu, memory=args.memory,
                   energy=args.energy, locals=args.locals, globals=args.globals,
                   max_depth=args.max_depth, sample=args.sample,
                   max_value_bytes=args.max_value_bytes, max_value_depth=args.max_value_depth,
                   summary=not args.quiet, fresh=args.fresh)
    except (RunError, TapeError) as exc:
        print(f"calltape: {exc}", file=sys.stderr)
        return 2
