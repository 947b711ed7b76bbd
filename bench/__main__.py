"""``python -m bench [NAME [options]]``: list the benchmarks or run one."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from bench import BENCHMARKS


def list_benchmarks() -> str:
    """Return the usage line followed by one line per benchmark."""
    width = max(len(name) for name in BENCHMARKS)
    lines = [
        "usage: python -m bench NAME [options]   (NAME --help for its options)",
        "",
        "benchmarks:",
    ]
    lines += [f"  {bench.name:<{width}}  {bench.summary}" for bench in BENCHMARKS.values()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the benchmark named by the first argument."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "list"}:
        print(list_benchmarks())
        return 0
    name, rest = args[0], args[1:]
    bench = BENCHMARKS.get(name)
    if bench is None:
        print(f"bench: unknown benchmark {name!r}\n", file=sys.stderr)
        print(list_benchmarks(), file=sys.stderr)
        return 2
    return bench.load()(rest)


def run() -> int:
    """Run :func:`main`, quietly when stdout is a pipe closed early (``| head``)."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(run())
