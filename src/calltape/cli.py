"""The ``calltape`` command: argument parsing and printing only.

    calltape functions [TAPE] [--last | --session ID] [--sort self] [--limit 20]
    calltape search [TAPE] --function price --since 2h --min-duration 0.01 --last  (exit 1: no match)
    calltape search [TAPE] --test tests/test_cart.py::test_total   (the calls a pytest test made)
    calltape show [TAPE] CALL_ID          (every field the tape holds for the call)
    calltape sessions [TAPE]
    calltape replay [TAPE] [CALL_ID ...] --function price --trust [-v]  (exit 5: nothing replayed)
    calltape make-tests [TAPE] --function price --out tests/test_recorded_price.py [--all]
    calltape tree [TAPE] [CALL_ID | --session ID | --last] [--depth N] [--min-duration T]
    calltape prune [TAPE] --older-than 7d | --keep-sessions N | --max-size 2GB  (old sessions go)
    calltape copy SRC DST                 (a tape onto another: a file onto a server and back)
    calltape probe add|list|remove [TAPE] ...  (probe specs every recording process applies)
    calltape run [--tape PATH] [--fresh] [--include PKG] ... (script.py | -m module) [args ...]
    calltape --version

TAPE defaults to $CALLTAPE_TAPE, then ./calltape.db.  A tape keeps every run:
functions, search, replay and make-tests read one with --session ID, or the
newest with --last (that session and its child processes' sessions), and
all of them without either.  --function NAME takes a qualname, a
module.qualname, a glob, or a bare name (no dot) naming the last part of
qualnames (`take` finds Inventory.take).  --json prints JSON for scripts.
Every error a user can cause, a damaged tape included (TapeError, on every
command), prints one sentence and exits 2.

Output scales with the tape: search prints at most --limit calls and says how
many more matched; replay lists the calls that changed or failed (-v: all)
and a summary line; make-tests writes one test per distinct function and
arguments.  Table cells are escaped (one value, one line) and cut with "…";
diffs and reasons wrap between words.  Each subcommand's --help ends with
examples (EXAMPLES).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import ReplayRefused, TapeError, __version__, _native
from . import open as open_tape
from ._cli.common import UsageError, add_selection, cut_middle, format_duration, parse_time
from ._cli.reading import SORTS
from ._cli.running import build_run_parser, run_main

TYPE_CHECKING = False  # typing is not loaded: every command pays its import
if TYPE_CHECKING:
    from typing import Any

__all__ = ["EXAMPLES", "UsageError", "build_parser", "cut_middle", "format_duration", "main",
           "parse_time"]




class _Unbuilt:
    """Stands for the options of a subcommand this run does not use: argparse
    spends a formatter on every option it adds, and each command pays that."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add_mutually_exclusive_group(self) -> _Unbuilt:
        return self


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``calltape`` parser; with `only`, the options of that subcommand
    alone are built (the others are listed, with their help line)."""
    parser = argparse.ArgumentParser(
        prog="calltape", description="Read a calltape tape: the calls a program recorded.",
        epilog="TAPE defaults to $CALLTAPE_TAPE, then ./calltape.db.")
    parser.add_argument("--version", action="version", version=f"calltape {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> Any:
        p = sub.add_parser(name, help=help, description=help)
        if only is not None and name != only:
            return _Unbuilt()
        p.add_argument("tape", nargs="?", metavar="TAPE", help="the tape file")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.add_argument("--trust", action="store_true",
                       help="rebuild any pickled value (only for tapes you made yourself)")
        p.add_argument("--allow", action="append", default=[], metavar="MODULE",
                       help="also rebuild pickled values of this module (repeatable)")
        return p

    p = add("functions", "each recorded function: calls, total, self, mean and max duration")
    add_selection(p)
    p.add_argument("--sort", choices=sorted(SORTS), default="total",
                   help="the order, largest first (name: A to Z; default total); self is"
                        " total minus the recorded calls it made")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N functions")
    p = add("search", "find recorded calls, newest first")
    p.add_argument("--function", help="qualname, module.qualname or a glob such as 'shop.*'")
    p.add_argument("--file", help="glob or part of the source file path")
    p.add_argument("--since", help="ISO date/time or relative time (10m, 2h, 3d)")
    p.add_argument("--until", help="ISO date/time or relative time")
    p.add_argument("--min-duration", type=float, metavar="SECONDS")
    p.add_argument("--max-duration", type=float, metavar="SECONDS")
    p.add_argument("--outcome", choices=["returned", "raised", "closed"])
    p.add_argument("--captured", choices=["decorator", "monitor", "flat", "probe", "timer"],
                   help="only the calls captured this way")
    add_selection(p)
    p.add_argument("--thread", type=int, metavar="IDENT", help="a thread ident")
    p.add_argument("--test", metavar="NODEID",
                   help="the calls of a pytest test (pytest --calltape): its node id, a node"
                        " above tests (a file, a class) or a glob")
    p.add_argument("--energy", action="append", metavar="DOMAIN=UJ",
                   help="at most this energy in microjoules: pkg=100 or dram=50 (repeatable);"
                        " calls recorded without energy never match")
    p.add_argument("--order", choices=["newest", "oldest"], default="newest")
    p.add_argument("--limit", type=int, default=20, help="how many calls (default 20)")
    p = add("show", "one call in full: arguments, result or exception")
    p.add_argument("call_id", type=int, metavar="CALL_ID")
    add("sessions", "the processes that recorded onto the tape, newest first")
    p = add("replay", "run recorded calls again with today's code and compare the outcomes"
                      " (exit status 1 when any changed or failed)")
    p.add_argument("call_ids", nargs="*", type=int, metavar="CALL_ID",
                   help="the calls to replay (default: every call the filters find)")
    p.add_argument("--function", help="qualname, module.qualname or a glob such as 'shop.*'")
    p.add_argument("--since", help="ISO date/time or relative time (10m, 2h, 3d)")
    p.add_argument("--until", help="ISO date/time or relative time")
    p.add_argument("--limit", type=int, help="at most this many calls, oldest first")
    add_selection(p)
    p.add_argument("--rel", type=float, default=0.0, metavar="X",
                   help="relative tolerance for floats (default 0: exact)")
    p.add_argument("--abs", type=float, default=0.0, metavar="X",
                   help="absolute tolerance for floats (default 0: exact)")
    p.add_argument("--globals", choices=["recorded"],
                   help="run with the recorded module globals patched in (globals=True recordings)")
    p.add_argument("--record", action="store_true",
                   help="record the replayed calls onto the tape as a new session")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list every call (default: those that changed or failed)")
    p = add("make-tests", "write recorded calls out as a pytest module of regression tests")
    p.add_argument("--function", required=True,
                   help="qualname, module.qualname or a glob such as 'shop.*'")
    p.add_argument("--out", required=True, metavar="PATH", help="the test module to write (.py)")
    p.add_argument("--limit", type=int, help="at most this many calls, oldest first")
    p.add_argument("--all", action="store_true",
                   help="one test per call (default: one per distinct function and arguments)")
    add_selection(p)
    p = add("tree", "the recorded calls as a tree: each call's duration, function and"
                    " arguments, the calls it made below it, oldest first")
    p.add_argument("call_id", nargs="?", type=int, metavar="CALL_ID",
                   help="show this call and the calls below it")
    add_selection(p)
    p.add_argument("--depth", type=int, metavar="N", help="show N levels (default: all)")
    p.add_argument("--min-duration", type=float, metavar="SECONDS",
                   help="fold the calls shorter than this into one line per parent")
    p.add_argument("--limit", type=int, default=25, metavar="N",
                   help="show at most N calls under each parent, oldest first (default 25)")
    p = add("export", "write the calls out for other tools: a Chrome trace (Perfetto,"
                      " chrome://tracing), JSON lines or CSV")
    p.add_argument("--format", choices=["chrome", "jsonl", "csv"], default="chrome",
                   help="chrome: a trace event file (default); jsonl: one object per call;"
                        " csv: one row per call")
    p.add_argument("--out", metavar="FILE", help="the file to write (default: stdout)")
    add_selection(p)
    p.add_argument("--since", help="ISO date/time or relative time (10m, 2h, 3d)")
    p.add_argument("--until", help="ISO date/time or relative time")
    p = add("report", "a report of a run: results.csv, results_aggregate.csv, figures and an"
                      " index.html to open in a browser (the newest run by default)")
    p.add_argument("--out", metavar="DIR", default="calltape-report",
                   help="the folder to write (default: calltape-report)")
    p.add_argument("--title", help="the title of the page and figures")
    p.add_argument("--format", default="png,html", metavar="LIST",
                   help="comma-separated: png, svg, html (default: png,html)")
    add_selection(p)
    p.add_argument("--since", help="ISO date/time or relative time (10m, 2h, 3d): every"
                                   " session's calls from then, unless --session/--last")
    p.add_argument("--until", help="ISO date/time or relative time")
    p = add("prune", "delete the sessions that ended before a time (or beyond the newest N,"
                      " or the oldest while the tape is over a size), and their calls")
    p.add_argument("--older-than", metavar="AGE",
                   help="a relative time (12h, 7d) or an ISO date: sessions ended before it go")
    p.add_argument("--keep-sessions", type=int, metavar="N",
                   help="the N newest sessions stay, older ones go")
    p.add_argument("--max-size", metavar="SIZE",
                   help="2GB, 500MiB: the oldest sessions go while the tape is larger"
                        " (the newest always stays)")
    p = sub.add_parser("completion", help="print the shell completion of calltape"
                                          ' (eval "$(calltape completion bash)")')
    p.add_argument("shell", choices=["bash"], help="bash (zsh loads it after bashcompinit)")
    sub.add_parser("copy", help="copy a tape onto another: a file onto a PostgreSQL server"
                                " and back (see: calltape copy --help)", add_help=False)
    sub.add_parser("probe", help="probe specs on the tape: add, list, remove"
                                 " (see: calltape probe --help)", add_help=False)
    sub.add_parser("run", help="run a Python program, recording its calls"
                               " (see: calltape run --help)", add_help=False)
    _add_examples(sub)
    return parser


EXAMPLES = {
    "functions": "calltape functions\ncalltape functions app.db --json",
    "search": "calltape search --function price --since 2h --min-duration 0.01\n"
              "calltape search app.db --outcome raised --limit 100\n"
              "calltape search --test tests/test_cart.py::test_total --last",
    "show": "calltape show 1234\ncalltape show app.db 1234 --json",
    "sessions": "calltape sessions\ncalltape sessions app.db --json",
    "replay": "calltape replay --function 'shop.*' --trust\n"
              "calltape replay app.db 12 13 --allow shop -v",
    "make-tests": "calltape make-tests --function price --out tests/test_recorded_price.py"
                  " --allow shop",
    "tree": "calltape tree 1234 --depth 3\ncalltape tree --last --min-duration 0.001",
    "export": "calltape export --format chrome --out trace.json   (open it in ui.perfetto.dev)\n"
              "calltape export app.db --last --format jsonl --out calls.jsonl",
    "report": "calltape report            (the newest run, into calltape-report/index.html)\n"
              "calltape report app.db --session 3 --out report --format svg,html",
    "prune": "calltape prune --older-than 7d\ncalltape prune --keep-sessions 20\n"
             "calltape prune --max-size 2GB\n"
             "calltape prune postgresql:///calls --older-than 12h",
    "copy": "calltape copy app.db postgresql://db.example/calls\n"
            "calltape copy postgresql:///calls offline.db",
    "probe": "calltape probe add app.db cart shop.cart.Cart.total --type log --value result\n"
             "calltape probe list app.db\ncalltape probe remove app.db cart",
    "completion": "calltape completion bash > ~/.local/share/bash-completion/completions/calltape\n"
                  'eval "$(calltape completion bash)"   # or this line in ~/.bashrc',
}


def _add_examples(sub: Any) -> None:
    """Each subcommand's --help ends with examples (EXAMPLES, printed as written)."""
    for name, p in sub.choices.items():
        if name in EXAMPLES:
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            lines = "\n".join("  " + ln for ln in EXAMPLES[name].splitlines())
            p.epilog = f"example{'s' if chr(10) in EXAMPLES[name] else ''}:\n{lines}"


# each command's module in calltape._cli and its function there: only the
# module of the command that runs is imported
_MODULES = {"functions": "reading", "search": "reading", "show": "reading",
            "sessions": "reading", "replay": "replaying", "make-tests": "replaying",
            "tree": "tree", "export": "writing", "report": "writing", "prune": "writing"}


def _command(name: str) -> Any:
    """The function that runs the subcommand `name` (``cmd_make_tests`` for make-tests)."""
    module = importlib.import_module(f"._cli.{_MODULES[name]}", __package__)
    return getattr(module, "cmd_" + name.replace("-", "_"))


_COMMANDS = ("functions", "search", "show", "sessions", "replay", "make-tests", "tree",
             "export", "report", "prune")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``calltape`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return run_main(argv[1:])
    if argv[:1] == ["probe"]:
        from ._cli.probe import main as probe_main

        return probe_main(argv[1:])
    if argv[:1] == ["copy"]:
        from ._cli.copying import main as copy_main

        return copy_main(argv[1:])
    if argv[:1] == ["completion"]:
        build_parser("completion").parse_args(argv)  # its usage errors and --help
        from ._completion import completion_script

        print(completion_script(build_parser(), build_run_parser()), end="")
        return 0
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in _COMMANDS else None)
    args = parser.parse_args(argv)
    args.command_line = "calltape " + " ".join(sys.argv[1:] if argv is None else argv)
    if (args.command == "replay" and args.tape and args.tape.isdigit()
            and not os.path.exists(args.tape)):
        args.call_ids.insert(0, int(args.tape))  # `calltape replay 12 13`: ids, default tape
        args.tape = None
    if (args.command == "tree" and args.tape and args.tape.isdigit() and args.call_id is None
            and not os.path.exists(args.tape)):
        args.call_id, args.tape = int(args.tape), None  # `calltape tree 12`: an id, default tape
    path = args.tape or _native.default_tape()
    color = sys.stdout.isatty() and not args.json and "NO_COLOR" not in os.environ
    args.path = path
    try:
        with open_tape(path, trust=args.trust, allow=args.allow) as tape:
            status = _command(args.command)(tape, args, color)
    except (TapeError, UsageError, ValueError, ReplayRefused) as exc:
        # one line, whatever a damaged tape put into the names it quotes
        print("calltape: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
