"""The probe tests (3.11 and 3.12+); the subjects module lives beside this file."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.fixture(autouse=True)
def _no_probes_left():
    from calltape import probes

    yield
    for p in list(probes.active_probes.values()):
        p.stop()
    probes.manager.remove_all()
    probes.manager.specs.clear()
