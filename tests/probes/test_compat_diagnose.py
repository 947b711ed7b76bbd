"""calltape.compat.diagnose: the seed document's examples with only the import changed."""

import textwrap

from _util import run_python

SEED = '''
import datetime
import calltape.compat.diagnose as diagnose
from calltape.compat.diagnose import Breakpoint, LogInstrument, HistogramInstrument, IncrementInstrument
from path.to.module import myclass

print(myclass().add13(arg=5))
p = diagnose.probes.attach_to("path.to.module.myclass.add13")
p.instruments["foo"] = diagnose.LogInstrument("foo", "arg")
p.start()
print(myclass().add13(arg=5))
p.stop()

diagnose.manager.instrument_classes = {
    "log": LogInstrument,
    "hist": HistogramInstrument,
    "incr": IncrementInstrument,
}
diagnose.manager.global_namespace.update({"foo": lambda v: v * 2})
diagnose.manager.specs["instr-1"] = {
    "target": "path.to.module.myclass.add13",
    "instrument": {
        "type": "log",
        "name": "myapp.method",
        "value": "foo(result)",
        "event": "return",
        "custom": {},
    },
    "lifespan": 10,
    "lastmodified": datetime.datetime.now(datetime.timezone.utc),
    "applied": {},
}
diagnose.manager.apply()
print(myclass().add13(arg=1))
print(list(diagnose.manager.specs["instr-1"]["applied"].values())[0]["error"])

class S3Archive:
    def unarchive(self):
        return "unarchived"

class Obj:
    def unarchive(self):
        return S3Archive().unarchive()

object = Obj()
with Breakpoint(S3Archive, "unarchive") as bp:
    bp.start_thread(object.unarchive)
    bp.wait()
    print("paused in", bp.stackframe.f_code.co_name)
    bp.release()

with diagnose.sensor("path.to.module.myclass.add13") as s:
    myclass().add13(arg=2)
print(s.results)
'''


def test_seed_examples(tmp_path):
    mod = tmp_path / "path" / "to"
    mod.mkdir(parents=True)
    (tmp_path / "path" / "__init__.py").write_text("")
    (mod / "__init__.py").write_text("")
    (mod / "module.py").write_text(textwrap.dedent('''
        class myclass:
            def add13(self, arg):
                return arg + 13
    '''))
    proc = run_python(tmp_path, SEED, tape=str(tmp_path / "t.db"), env_extra={"PYTHONPATH": str(tmp_path)})
    assert proc.stdout.splitlines() == [
        "18", "Probe (foo) = 5", "18", "Probe (myapp.method) = 28", "14", "None",
        "paused in unarchive", "Probe (myapp.method) = 30", "[15]"], proc.stderr


def test_log_instrument_writes_to_out_or_the_stdout_of_the_moment(tmp_path):
    proc = run_python(tmp_path, '''
import contextlib, io, sys
import calltape.compat.diagnose as diagnose

def add(a):
    return a + 1

p = diagnose.probes.attach_to(add)
p.instruments["a"] = diagnose.LogInstrument("a", "a")
p.start()
add(1)                                  # sys.stdout: the real one
buf = io.StringIO()
with contextlib.redirect_stdout(buf):   # the stdout of the moment
    add(2)
assert buf.getvalue() == "Probe (a) = 2\\n", repr(buf.getvalue())
mine = io.StringIO()
p.instruments["a"].out = mine           # an instrument's own stream
add(3)
assert mine.getvalue() == "Probe (a) = 3\\n", repr(mine.getvalue())

class Upper(diagnose.LogInstrument):    # a subclass's emit is called instead
    def emit(self, name, text):
        print(f"{name.upper()}: {text}")
p.instruments["a"] = Upper("up", "a * 2")
add(4)
p.stop()
''', tape=str(tmp_path / "t.db"))
    assert proc.stdout.splitlines() == ["Probe (a) = 1", "UP: 8"], proc.stderr
