"""Helpers shared by the test modules (not a test module itself)."""

import datetime
import json
import math
import os
import subprocess
import sys
import textwrap

import calltape

HERE = os.path.dirname(os.path.abspath(__file__))
UTC = datetime.UTC


def read_calls(path, function=None, flush=True):
    """Flushes this process's recordings and returns the calls on `path`."""
    if flush:
        assert calltape.flush(timeout=30) is True, "calltape.flush() did not commit everything"
    tape = calltape.open(path, trust=True)
    if function is None:
        return list(tape.calls())
    return list(tape.calls(function=function))


def open_tape(path, flush=True):
    if flush:
        assert calltape.flush(timeout=30) is True
    return calltape.open(path, trust=True)


def only_call(path, function=None):
    calls = read_calls(path, function)
    assert len(calls) == 1, f"expected exactly one call, got {len(calls)}: {calls!r}"
    return calls[0]


def to_utc(dt):
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def is_redacted(value):
    marker = calltape.Redacted
    if value is marker:
        return True
    return isinstance(marker, type) and isinstance(value, marker)


def same_value(a, b):
    """Equality that also compares exact types recursively and handles nan / -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        bkeys = list(b.keys())
        for ka, va in a.items():
            match = [kb for kb in bkeys if type(kb) is type(ka) and kb == ka]
            if not match or not same_value(va, b[match[0]]):
                return False
        return True
    if isinstance(a, (set, frozenset)):
        return a == b
    return a == b


def child_env(tape=None, extra=None):
    env = dict(os.environ)
    env.pop("CALLTAPE_TAPE", None)
    if tape is not None:
        env["CALLTAPE_TAPE"] = str(tape)
    env["PYTHONPATH"] = HERE + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONWARNINGS", None)
    if extra:
        env.update(extra)
    return env


def write_script(tmp_path, source, name="script.py"):
    path = tmp_path / name
    path.write_text(PRELUDE + textwrap.dedent(source))
    return path


def run_python(tmp_path, source, tape=None, *, args=(), flags=(), rc=0, timeout=90,
               env_extra=None, cwd=None, name="script.py"):
    """Runs `source` in a fresh interpreter with CALLTAPE_TAPE=tape.

    Asserts the return code when `rc` is not None and returns the
    CompletedProcess (text mode)."""
    script = write_script(tmp_path, source, name)
    proc = subprocess.run(
        [sys.executable, *flags, str(script), *args],
        env=child_env(tape, env_extra),
        cwd=str(cwd or tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if rc is not None:
        assert proc.returncode == rc, (
            f"child exited with {proc.returncode}, expected {rc}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc


def last_json(proc):
    """The last line of the child's stdout parsed as JSON."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"child printed nothing; stderr:\n{proc.stderr}"
    return json.loads(lines[-1])


# Prepended to every child script.
PRELUDE = """\
import os, sys
"""

# Child-side snippet: drop the capabilities that let root ignore file
# permissions, so that a 0444 file or a 0555 directory is really read-only.
# Exits with 77 when that is not possible (the test then skips).
DROP_DAC = """
import ctypes as _ct

def _drop_dac():
    if os.geteuid() != 0:
        return
    libc = _ct.CDLL(None, use_errno=True)

    class _Hdr(_ct.Structure):
        _fields_ = [("version", _ct.c_uint32), ("pid", _ct.c_int)]

    class _Data(_ct.Structure):
        _fields_ = [("effective", _ct.c_uint32), ("permitted", _ct.c_uint32),
                    ("inheritable", _ct.c_uint32)]

    hdr = _Hdr(0x20080522, 0)
    data = (_Data * 2)()
    if libc.capget(_ct.byref(hdr), data) != 0:
        sys.exit(77)
    mask = ~((1 << 1) | (1 << 2) | (1 << 3)) & 0xFFFFFFFF  # DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER
    data[0].effective &= mask
    data[0].permitted &= mask
    data[0].inheritable &= mask
    if libc.capset(_ct.byref(hdr), data) != 0:
        sys.exit(77)

_drop_dac()
"""


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
