"""Recorded functions importable by multiprocessing children (fork and spawn).

Spawned children import this module by name; they find the tape through the
CALLTAPE_TAPE environment variable that calltape.configure() exports.
"""

import os

import calltape


@calltape.record
def square(x):
    return x * x


@calltape.record
def square_with_pid(x):
    return x * x, os.getpid()


def run_squares(start, n):
    """Records `n` calls of square(); returns their sum."""
    total = 0
    for i in range(start, start + n):
        total += square(i)
    return total


def run_squares_and_flush(start, n):
    total = run_squares(start, n)
    if not calltape.flush(timeout=30):
        raise SystemExit(3)
    return total
