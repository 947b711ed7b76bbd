"""``calltape copy SRC DST``: a tape copied between stores (a file onto a
PostgreSQL server and back, or file to file), by the engine's store_copy.

    calltape copy app.db postgresql://db.example/calls
    calltape copy postgresql:///calls offline.db
"""

from __future__ import annotations

import argparse
import json
import sys


def build_copy_parser() -> argparse.ArgumentParser:
    """The parser of ``calltape copy``."""
    from ..cli import EXAMPLES

    lines = "\n".join("  " + ln for ln in EXAMPLES["copy"].splitlines())
    parser = argparse.ArgumentParser(
        prog="calltape copy",
        description="copy a tape onto another (a file or a postgresql:// URL, created when"
                    " missing; the tapes it holds stay): every session with its calls, values,"
                    " threads, tests' spans and probe specs, under the destination's own ids",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"examples:\n{lines}")
    parser.add_argument("src", metavar="SRC", help="the tape to copy (a file or a URL)")
    parser.add_argument("dst", metavar="DST", help="the tape to copy onto (a file or a URL)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a sentence")
    return parser


def main(argv: list[str]) -> int:
    """Runs ``calltape copy ARGV``; returns the exit status (2: a user error)."""
    from .. import TapeError, _native
    from .._run import redact

    args = build_copy_parser().parse_args(argv)
    try:
        sessions, calls = _native.copy(args.src, args.dst)
    except TapeError as exc:
        print("calltape: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"sessions": sessions, "calls": calls}))
    else:
        print(f"calltape: copied {sessions:,} session{'s' if sessions != 1 else ''}"
              f" ({calls:,} call{'s' if calls != 1 else ''}) from {redact(args.src)}"
              f" to {redact(args.dst)}")
    return 0
