"""``python -m calltape.compat.pymaap.results --logdir logs [--subtitle] [--tag]
[--start-time] [--end-time]``: PyMAAP's results script."""

from __future__ import annotations

from .analysis import analysis

if __name__ == "__main__":
    analysis()
