"""``calltape probe add|list|remove [TAPE] ...``: the probe specs kept on a tape.

Every process recording onto the tape whose manager reads it
(``calltape.probes.manager.specs = calltape.probes.TapeStore(TAPE)``) applies
them at its next ``apply()``, and reports back per process::

    calltape probe add shop.tape cart-total shop.cart.Cart.total --type log --value result
    calltape probe list shop.tape
    calltape probe remove shop.tape cart-total
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys

from .. import _native
from ..probes import TapeStore

_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_<>]\w*>?)*$")
_TYPES = ("log", "count", "hist", "histogram", "record")
_EVENTS = ("call", "return", "error", "end")


class _Error(Exception):
    """A user error: one sentence."""


def build_probe_parser() -> argparse.ArgumentParser:
    """The parser of ``calltape probe``."""
    from ..cli import EXAMPLES

    lines = "\n".join("  " + ln for ln in EXAMPLES["probe"].splitlines())
    parser = argparse.ArgumentParser(prog="calltape probe",
                                     description="probe specs kept on a tape: every process"
                                     " whose manager reads the tape (TapeStore) applies them",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"examples:\n{lines}")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("add", help="add or replace a spec: calltape probe add [TAPE] ID TARGET")
    p.add_argument("words", nargs="+", metavar="[TAPE] ID TARGET")
    p.add_argument("--type", default="log", help=f"the instrument ({', '.join(_TYPES)}; default"
                                                 " log) or a name in instrument_classes")
    p.add_argument("--name", help="the instrument's name (default: the target)")
    p.add_argument("--value", default="result", help="the expression (default: result)")
    p.add_argument("--event", default="return", choices=_EVENTS)
    p.add_argument("--lifespan", type=float, metavar="MINUTES",
                   help="minutes after which it detaches itself")
    p = sub.add_parser("list", help="the specs and each process's status")
    p.add_argument("words", nargs="*", metavar="TAPE")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("remove", help="remove a spec: calltape probe remove [TAPE] ID")
    p.add_argument("words", nargs="+", metavar="[TAPE] ID")
    return parser


def _split(words: list[str], n: int) -> tuple[str, list[str]]:
    if len(words) == n + 1:
        return words[0], words[1:]
    if len(words) == n:
        return _native.default_tape(), words
    raise _Error(f"expected {'[TAPE] ' if n else ''}{n} argument{'s' if n != 1 else ''}"
                 f" here, got {len(words)}: {' '.join(words)}")


def _add(args: argparse.Namespace) -> int:
    path, (spec_id, target) = _split(args.words, 2)
    if not _TARGET.match(target) or "." not in target:
        raise _Error(f"{target!r} is not a dotted target (module.function or"
                     " module.Class.method)")
    try:
        compile(args.value, "<probe value>", "eval")
    except SyntaxError as exc:
        raise _Error(f"the expression {args.value!r} is not valid Python: {exc.msg}") from None
    spec = {"target": target, "lifespan": args.lifespan,
            "lastmodified": datetime.datetime.now(datetime.UTC).isoformat(),
            "instrument": {"type": args.type, "name": args.name or target,
                           "value": args.value, "event": args.event, "custom": {}}}
    TapeStore(path)[spec_id] = spec
    print(f"calltape: probe {spec_id} on {target} added to {path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    path, _ = _split(args.words, 0)
    specs = dict(TapeStore(path).items())
    if args.json:
        print(json.dumps(specs, sort_keys=True))
        return 0
    if not specs:
        print(f"calltape: no probe specs on {path}")
    for spec_id, spec in specs.items():
        ins = spec.get("instrument", {})
        print(f"{spec_id}: {spec.get('target')} {ins.get('type')} {ins.get('event')}"
              f" {ins.get('value')!r} (lifespan {spec.get('lifespan')}, modified"
              f" {spec.get('lastmodified')})")
        for process, info in sorted(spec.get("applied", {}).items()):
            if info.get("error"):
                state = f"error: {info['error']}"
            elif info.get("expired"):
                state = "expired"
            elif info.get("lastmodified") != spec.get("lastmodified"):
                state = "applied (an older version)"
            else:
                state = "applied"
            errors = info.get("errors") or []
            more = f"; {len(errors)} error(s) firing, last: {errors[-1][2]}" if errors else ""
            print(f"  {process}: {state}{more}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    path, (spec_id,) = _split(args.words, 1)
    try:
        del TapeStore(path)[spec_id]
    except KeyError:
        raise _Error(f"no probe spec {spec_id!r} on {path}") from None
    print(f"calltape: probe {spec_id} removed from {path}")
    return 0


def main(argv: list[str]) -> int:
    """Runs ``calltape probe ARGV``; returns the exit status (2: a user error)."""
    from .. import TapeError

    args = build_probe_parser().parse_args(argv)
    try:
        return {"add": _add, "list": _list, "remove": _remove}[args.action](args)
    except (_Error, TapeError) as exc:
        print("calltape: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
