"""Segment formats 5 and 6 on real tapes, read by the same reader.

Format 6 shuffles an arguments or result column whose calls each take the
same number of bytes (byte j of every call together) before packing it;
format 5, which calltape wrote before, has no shuffling mask.  A tape of
format-5 segments (made here from a recorded one by dropping that mask and
writing its header checksum anew, as the format-5 writer laid them out)
reads back the same calls; a segment whose packed column does not unpack,
even with checksums that match, is a TapeError, never other values.
"""

import sqlite3

import pytest
from _util import run_python

import calltape

UNIFORM = """
import calltape
calltape.configure(tape={tape!r})

@calltape.record
def scale(i, x, unit):
    return i * 3

@calltape.record
def label(text):
    return text.upper()

for i in range(10000, 15000):  # ints of one encoded size: calls laid out alike
    scale(i, i * 0.5, "mm")
for i in range(3000):
    label("item " + "x" * (i % 37))
calltape.flush()
"""


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def _crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _varint(data, at):
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


class Segment:
    """The parts of one segment's bytes: header varints and columns."""

    def __init__(self, data):
        self.format = data[0]
        at = 1
        self.head = []
        for _ in range(5 if self.format >= 6 else 4):
            value, at = _varint(data, at)
            self.head.append(value)
        self.masks_end = at
        self.columns = []
        for _ in range(10):
            n, at = _varint(data, at)
            self.columns.append((at, n))
            at += n
        assert at == len(data) - 4 * 11
        self.data = bytearray(data)

    @property
    def packed(self):
        return self.head[3]

    @property
    def shuffled(self):
        return self.head[4] if self.format >= 6 else 0


def _with_checksums(body):
    """`body` (a segment without its checksums) with its eleven CRC-32Cs."""
    seg_at = 1
    for _ in range(5 if body[0] >= 6 else 4):
        _, seg_at = _varint(body, seg_at)
    head = _crc32c(body[:seg_at])
    at, cols = seg_at, []
    for _ in range(10):
        start = at
        n, at = _varint(body, at)
        head = _crc32c(body[start:at], head)
        cols.append(body[at:at + n])
        at += n
    out = bytes(body) + head.to_bytes(4, "little")
    return out + b"".join(_crc32c(c).to_bytes(4, "little") for c in cols)


def _as_format_5(data):
    """A format-6 segment with nothing shuffled, as format 5 laid it out."""
    seg = Segment(data)
    assert seg.format == 6 and seg.shuffled == 0
    body = b"\x05" + bytes(data[1:seg.masks_end - 1]) + bytes(data[seg.masks_end:-44])
    return _with_checksums(body)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("formats")
    tape = tmp / "t.db"
    run_python(tmp, UNIFORM.format(tape=str(tape)))
    return tape


def _segments(path, qualname):
    with sqlite3.connect(path) as con:
        return con.execute(
            "SELECT s.id, s.data FROM segments s JOIN functions f ON f.id = s.function"
            " WHERE f.qualname = ? ORDER BY s.id", (qualname,)).fetchall()


def _values(path):
    tape = calltape.open(path)
    return ([(c.args, c.result) for c in tape.calls("scale")],
            [(c.args, c.result) for c in tape.calls("label")])


def test_calls_laid_out_alike_are_shuffled_and_read_back_exactly(recorded):
    segs = _segments(recorded, "scale")
    assert segs and all(data[0] == 6 for _, data in segs)
    assert all(Segment(data).shuffled & (1 << 8) for _, data in segs)  # the args column
    scale, label = _values(recorded)
    assert scale == [({"i": i, "x": i * 0.5, "unit": "mm"}, i * 3) for i in range(10000, 15000)]
    assert label == [({"text": "item " + "x" * (i % 37)}, ("item " + "x" * (i % 37)).upper())
                     for i in range(3000)]
    # one call of another size (the texts) leaves the column as it was
    assert all(Segment(data).shuffled == 0 for _, data in _segments(recorded, "label"))
    per_call = sum(len(data) for _, data in segs) / 5000
    assert per_call < 8, per_call


def test_a_tape_of_format_5_reads_as_it_was(recorded, tmp_path):
    old = tmp_path / "five.db"
    with sqlite3.connect(recorded) as src, sqlite3.connect(old) as dst:
        src.backup(dst)
    with sqlite3.connect(old) as con:
        rows = con.execute("SELECT s.id, s.data FROM segments s JOIN functions f"
                           " ON f.id = s.function WHERE f.qualname = 'label'").fetchall()
        assert any(Segment(data).packed for _, data in rows)  # packed, not shuffled
        for row, data in rows:
            con.execute("UPDATE segments SET data = ? WHERE id = ?", (_as_format_5(data), row))
        con.execute("DELETE FROM segments WHERE function ="
                    " (SELECT id FROM functions WHERE qualname = 'scale')")
    tape = calltape.open(old)
    assert [(c.args, c.result) for c in tape.calls("label")] == _values(recorded)[1]
    with sqlite3.connect(old) as con:
        assert {data[0] for (data,) in con.execute("SELECT data FROM segments s JOIN functions f"
                                                   " ON f.id = s.function"
                                                   " WHERE f.qualname = 'label'")} == {5}


def test_a_packed_column_that_does_not_unpack_is_a_tape_error(recorded, tmp_path):
    bad = tmp_path / "bad.db"
    with sqlite3.connect(recorded) as src, sqlite3.connect(bad) as dst:
        src.backup(dst)
    row, data = next((row, data) for row, data in _segments(bad, "scale")
                     if Segment(data).shuffled)
    seg = Segment(data)
    at, _ = seg.columns[8]
    raw, body_at = _varint(seg.data, at)
    # the raw size one byte short of whole shares: checksums written anew
    shorter = bytearray()
    v = raw - 1
    while v >= 0x80:
        shorter.append(v & 0x7F | 0x80)
        v >>= 7
    shorter.append(v)
    assert len(shorter) == body_at - at
    body = bytearray(seg.data[:-44])
    body[at:body_at] = shorter
    with sqlite3.connect(bad) as con:
        con.execute("UPDATE segments SET data = ? WHERE id = ?", (_with_checksums(body), row))
    with pytest.raises(calltape.TapeError) as info:
        calltape.open(bad).calls("scale")
    assert f"segment {row}" in str(info.value) and "cannot be decoded" in str(info.value)
