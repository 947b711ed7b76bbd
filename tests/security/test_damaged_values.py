"""Values that do not rebuild, on tapes whose segments carry no checksum.

Segments written by calltape before segment format 2 have no CRC-32C (and
before format 3 no packing mask), so
changed bytes reach the value decoder: a pickle that does not load, text
that is not UTF-8 (in a value, a marker or an exception), a dict key that
cannot be hashed.  Each is a TapeError naming the tape and the call, never
another exception type; a refused global stays a RefusedGlobal (a refusal,
not damage).  Such tapes are made here as older calltapes wrote them: the
segments of a real recording rewritten in format 1.
"""

import os
import sqlite3
import subprocess
import sys

import pytest
from _util import child_env, run_python

import calltape

SUBJECT = '''
import fractions, threading
import calltape


class Secret:
    def __init__(self, n):
        self.n = n


@calltape.record(pickle=[fractions.Fraction])
def f(label, ratio, lock, pair_key):
    return label


@calltape.record
def keep(payload):
    return None


@calltape.record
def fails(n):
    raise ValueError("boom " + str(n))


f("hello world", fractions.Fraction(1, 3), threading.Lock(), {(1, 2): 3})
keep(Secret(7))
try:
    fails(1)
except ValueError:
    pass
'''


def _varint(data, at):
    """The varint at data[at] and the offset after it."""
    v = shift = 0
    while True:
        v |= (data[at] & 0x7F) << shift
        shift += 7
        at += 1
        if not data[at - 1] & 0x80:
            return v, at


def _put_varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _flags_as_before_format_4(column):
    """The flags column of a format-4 (or 5) segment laid out as formats 1 to 3 had
    it (outcome | flags << 2, without the capture)."""
    out, at = b"", 0
    while at < len(column):
        v, at = _varint(column, at)
        flags = v >> 7 | ((v >> 2) & 3) << 3
        out += _put_varint(v & 3 | flags << 2)
    return out


def _as_format_1(path, *replacements):
    """Rewrites every segment of `path` in format 1 (no checksums), with the
    byte replacements given (same lengths) applied to its data."""
    db = sqlite3.connect(path)
    for row, data in db.execute("SELECT id, data FROM segments").fetchall():
        assert data[0] == 6  # with nothing packed, laid out as format 4
        at = 1
        for _ in range(3):  # n, first id, first start: then the packing masks
            _, at = _varint(data, at)
        assert data[at] == 0 and data[at + 1] == 0, "a small recording packs nothing"
        # no packing masks, no header and column checksums, the old flags
        columns, col_at = [], at + 2
        for _ in range(10):
            n, col_at = _varint(data, col_at)
            columns.append(data[col_at:col_at + n])
            col_at += n
        assert col_at == len(data) - 4 * 11
        columns[6] = _flags_as_before_format_4(columns[6])
        old = b"\x01" + data[1:at] + b"".join(_put_varint(len(c)) + c for c in columns)
        for a, b in replacements:
            assert len(a) == len(b)
            old = old.replace(a, b)
        db.execute("UPDATE segments SET data = ? WHERE id = ?", (old, row))
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


@pytest.fixture
def recorded(tmp_path):
    path = tmp_path / "old.db"
    (tmp_path / "subject_mod.py").write_text(SUBJECT)
    run_python(tmp_path, "import subject_mod", tape=path)
    return path


def _call(path, qualname):
    return calltape.open(path).calls(qualname)[0]


def test_a_tape_of_segment_format_1_reads_as_it_was(recorded, tmp_path):
    new = _call(recorded, "f")
    before = {k: v for k, v in new.args.items() if k != "lock"}
    _as_format_1(recorded)
    old = _call(recorded, "f")
    assert {k: v for k, v in old.args.items() if k != "lock"} == before
    assert before["label"] == "hello world" and before["pair_key"] == {(1, 2): 3}
    assert isinstance(old.args["lock"], calltape.Unencodable)
    assert _call(recorded, "fails").exception.message == "boom 1"


@pytest.mark.parametrize("what, old, new, cause", [
    ("a str", b"hello world", b"h\xffllo world", "malformed text"),
    ("a pickle", b"Fraction", b"Fr\xffction", "a pickled value on the tape cannot be loaded"),
    ("a marker's text", b"_thread.lock", b"_thread.\xffock", "malformed text"),
    ("a dict key", b"\x09\x02\x03\x02\x03\x04", b"\x08\x02\x03\x02\x03\x04",
     "a dict key on the tape cannot be used"),
])
def test_a_damaged_value_is_a_tape_error_naming_the_call(recorded, what, old, new, cause):
    _as_format_1(recorded, (old, new))
    c = _call(recorded, "f")
    with pytest.raises(calltape.TapeError) as info:
        c.args
    msg = str(info.value)
    assert msg.startswith(f"the tape {recorded} is damaged: call {c.id} (subject_mod.f),"
                          " its arguments: "), msg
    assert cause in msg
    assert isinstance(info.value.__cause__, Exception)  # what the decoder said


def test_damaged_exception_text_is_a_tape_error(recorded):
    _as_format_1(recorded, (b"boom 1", b"b\xffom 1"))
    c = _call(recorded, "fails")
    with pytest.raises(calltape.TapeError, match=rf"call {c.id} \(subject_mod.fails\), its"
                                                 " exception: malformed text"):
        c.exception


def test_a_refused_global_stays_a_refusal(recorded):
    _as_format_1(recorded)
    with pytest.raises(calltape.RefusedGlobal, match="subject_mod.Secret"):
        _call(recorded, "keep").args


def test_the_cli_shows_a_damaged_value_in_one_sentence(recorded, tmp_path):
    _as_format_1(recorded, (b"Fraction", b"Fr\xffction"))
    call_id = _call(recorded, "f").id
    for extra in ([], ["--json"]):
        proc = subprocess.run([sys.executable, "-m", "calltape", "show", str(recorded),
                               str(call_id), "--trust", *extra], capture_output=True, text=True,
                              env=child_env(None, {"PYTHONPATH": str(tmp_path)}), timeout=60,
                              cwd=os.fspath(tmp_path))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith(f"calltape: the tape {recorded} is damaged: call {call_id}")
