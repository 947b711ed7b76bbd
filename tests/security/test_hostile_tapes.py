"""A tape from someone else runs nothing: every read path against hostile tapes.

The hostile tape is made the way an attacker would make one: a recording process
whose ``pickle.dumps`` returns crafted bytes for the values it records (``__reduce__``
payloads, dotted globals reached through allowed modules, nested pickles), plus a
session row whose argv holds a pickle.  Each payload, if it ran, would create a
marker file; every read path is tried in a fresh process and no marker may appear.
A control reads the same tape with ``trust=True`` and shows that the payloads do run
then, so the marker check can fail.
"""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

VICTIM = """\
import os
from os import system
import calltape


class Carrier:
    '''A value whose pickle the hostile recorder replaces by payload number i.'''

    def __init__(self, i):
        self.i = i


CONFIG = Carrier(0)


@calltape.record(locals=True, globals=True)
def handle(x, n=0):
    local = Carrier(x.i)
    seen = CONFIG
    return Carrier(x.i)


def run(count):
    for i in range(count):
        handle(Carrier(i), n=i)
"""


def _varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _global(module, name, arg):
    """Pickle bytes calling module.name(arg) (protocol 4, so dotted names resolve)."""
    return b"\x80\x04c%s\n%s\n(V%s\ntR." % (module.encode(), name.encode(), arg.encode())


def _payloads(marker_dir):
    """(label, pickle bytes) pairs; each would create marker_dir/<label> if loaded."""
    out = []

    def shell(label, module, name):
        out.append((label, _global(module, name, f"touch {marker_dir}/{label}")))

    def python(label, module, name):
        code = f"open({str(marker_dir / label)!r}, 'w').close()"
        out.append((label, _global(module, name, code)))

    shell("reduce-posix-system", "posix", "system")
    shell("reduce-os-system", "os", "system")
    shell("dotted-pathlib", "pathlib", "os.system")
    shell("dotted-uuid", "uuid", "os.system")
    shell("dotted-typing", "typing", "contextlib.os.system")
    python("dotted-collections", "collections", "_sys.modules.__getitem__")
    python("dotted-fractions", "fractions", "re.enum.bltns.exec")
    python("dotted-functools", "functools", "GenericAlias.__init__.__globals__")
    shell("dotted-victim", "victim", "os.system")
    shell("imported-into-victim", "victim", "system")
    python("builtins-exec", "builtins", "exec")
    python("builtins-eval", "builtins", "eval")
    inner = _global("posix", "system", f"touch {marker_dir}/nested-pickle")
    out.append(("nested-pickle", b"\x80\x04cpickle\nloads\n(C" + bytes([len(inner)]) + inner + b"tR."))
    inner = b"cposix\nsystem\n(Vtouch %s/nested-reduce\ntR" % str(marker_dir).encode()
    out.append(("nested-reduce", b"\x80\x04ccollections\nOrderedDict\n((" + inner + b"ltR."))
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(folder, tape path, marker folder, payload labels) of a hostile tape."""
    root = tmp_path_factory.mktemp("hostile")
    markers = root / "markers"
    markers.mkdir()
    (root / "victim.py").write_text(VICTIM)
    payloads = _payloads(markers)
    tape = root / "t.db"
    recorder = textwrap.dedent("""
        import pickle, sys
        sys.path.insert(0, sys.argv[2])
        payloads = [bytes.fromhex(h) for h in sys.argv[3:]]
        real_dumps = pickle.dumps

        def dumps(obj, protocol=None, **kw):
            if type(obj).__name__ == "Carrier":
                return payloads[obj.i % len(payloads)]
            return real_dumps(obj, protocol, **kw)

        pickle.dumps = dumps            # the attacker's own calltape process
        import calltape
        calltape.configure(tape=sys.argv[1])
        import victim
        calltape.configure(pickle=[victim.Carrier])   # pickled, so dumps() is asked
        victim.run(len(payloads))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTAPE")}
    subprocess.run([sys.executable, "-c", recorder, str(tape), str(root),
                    *(p.hex() for _, p in payloads)], env=env, check=True, timeout=60)
    db = sqlite3.connect(tape)
    argv_payload = _global("posix", "system", f"touch {markers}/session-argv")
    argv = b"\x08\x02\x06\x04prog\x10" + _varint(len(argv_payload)) + argv_payload
    db.execute("UPDATE sessions SET argv = ?", (argv,))
    db.commit()
    db.close()
    assert not list(markers.iterdir()), "recording ran a payload"
    return root, tape, markers, [label for label, _ in payloads]


def _env(root):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTAPE")}
    env["PYTHONPATH"] = str(root)
    return env


def _python(root, source):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], cwd=root,
                          env=_env(root), capture_output=True, text=True, timeout=90)


def _calltape(root, *args):
    exe = os.path.join(os.path.dirname(sys.executable), "calltape")
    command = [exe] if os.path.exists(exe) else [sys.executable, "-m", "calltape"]
    return subprocess.run([*command, *map(str, args)], cwd=root, env=_env(root),
                          capture_output=True, text=True, timeout=90)


def _assert_no_marker(markers, proc):
    ran = sorted(p.name for p in markers.iterdir())
    assert not ran, f"payloads ran: {ran}\n{proc.stdout}\n{proc.stderr}"


READ_EVERYTHING = """
    import json, calltape
    tape = calltape.open("t.db"{opts})
    refused = other = values = 0
    for call in tape.calls():
        for field in ("args", "result", "locals", "globals", "defaults"):
            try:
                getattr(call, field)
                values += 1
            except calltape.RefusedGlobal:
                refused += 1
            except Exception as exc:
                other += 1
                print("unexpected", type(exc).__name__, exc)
    print(json.dumps({{"refused": refused, "other": other, "values": values}}))
"""


@pytest.mark.parametrize("opts", ["", ", allow=['victim']", (", allow=['pathlib', 'uuid', 'typing',"
                                  " 'collections', 'fractions', 'functools', 'victim.Carrier']")])
def test_call_values_refuse_every_payload(hostile, opts):
    root, _tape, markers, labels = hostile
    proc = _python(root, READ_EVERYTHING.format(opts=opts))
    assert proc.returncode == 0, proc.stderr
    _assert_no_marker(markers, proc)
    counts = json.loads(proc.stdout.splitlines()[-1])
    assert counts["other"] == 0, proc.stdout
    # each call's x (args), result, the local and the global are payloads
    assert counts["refused"] >= 4 * len(labels)


LIVE = {  # payload -> the dotted path it calls, when it can run on this Python
    "reduce-posix-system": ("posix", "system"), "dotted-pathlib": ("pathlib", "os.system"),
    "dotted-uuid": ("uuid", "os.system"), "dotted-typing": ("typing", "contextlib.os.system"),
    "dotted-fractions": ("fractions", "re.enum.bltns.exec"),
    "nested-pickle": ("pickle", "loads"), "nested-reduce": ("collections", "OrderedDict"),
}


def _resolves(module, name):
    import importlib

    obj = importlib.import_module(module)
    for part in name.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def test_trusted_read_does_run_them(hostile):
    """The control: the payloads are live, so the marker checks can fail."""
    root, _tape, markers, _labels = hostile
    proc = _python(root, READ_EVERYTHING.format(opts=", trust=True"))
    ran = {p.name for p in markers.iterdir()}
    for p in markers.iterdir():
        p.unlink()
    live = {label for label, target in LIVE.items() if _resolves(*target)}
    assert {"reduce-posix-system", "dotted-uuid", "nested-pickle"} <= live
    assert live <= ran, proc.stdout


def test_search_by_args_and_sessions_refuse(hostile):
    root, _tape, markers, _ = hostile
    proc = _python(root, """
        import calltape
        tape = calltape.open("t.db", allow=["victim"])
        try:
            found = tape.search(args={"x": 1})
            print("found", len(found))
        except calltape.RefusedGlobal as exc:
            print("refused", exc)
        argv = tape.sessions()[0].argv
        assert argv[0] == "prog" and argv[1].startswith("<"), argv
        print("argv", argv)
    """)
    assert proc.returncode == 0, proc.stderr
    _assert_no_marker(markers, proc)


@pytest.mark.parametrize("command", [
    ("show", "1"), ("show", "--json", "1"), ("show", "2"), ("show", "--json", "5"),
    ("sessions",), ("sessions", "--json"), ("functions",), ("search", "--function", "handle"),
    ("replay", "--allow", "victim"), ("make-tests", "--function", "handle", "--out", "test_h.py"),
    ("make-tests", "--function", "handle", "--out", "test_h2.py", "--allow", "victim"),
])
def test_command_line_runs_nothing(hostile, command):
    root, tape, markers, _ = hostile
    proc = _calltape(root, command[0], tape, *command[1:])
    _assert_no_marker(markers, proc)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1, 2, 5), proc.stderr  # 5: replay skipped every call


def test_replay_with_the_function_module_allowed_runs_nothing(hostile):
    root, _tape, markers, _labels = hostile
    proc = _python(root, """
        import calltape
        report = calltape.open("t.db", allow=["victim"]).replay()
        print(report.counts)
        for o in report:
            assert o.status == "skipped", o
            assert "refused" in o.reason or "cannot" in o.reason, o.reason
    """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_no_marker(markers, proc)


def test_load_values_refuses_every_payload(hostile, tmp_path):
    root, _tape, markers, labels = hostile
    for label, payload in _payloads(markers):
        (root / f"test_{label}.calltape").write_bytes(b"\x10" + _varint(len(payload)) + payload)
    proc = _python(root, """
        import glob, calltape
        from calltape.testing import load_values
        refused = 0
        for path in sorted(glob.glob("test_*.calltape")):
            try:
                load_values(path[:-len(".calltape")] + ".py", allow=("victim",))
            except calltape.RefusedGlobal:
                refused += 1
        print(refused)
    """)
    assert proc.returncode == 0, proc.stderr
    _assert_no_marker(markers, proc)
    assert int(proc.stdout.split()[-1]) == len(labels)
