"""make-tests writes text from the tape only as literals: modules, qualnames,
exception messages and the tape's own path full of quotes, triple quotes,
backslashes and newlines make a module that compiles and runs nothing."""

import os
import subprocess
import sys
import textwrap

import pytest

INJECT = '"""\nopen(MARKER, "w").close()\n"""' + "'''\\\n\r\x01#"


@pytest.fixture
def hostile_names(tmp_path):
    marker = tmp_path / "marker"
    folder = tmp_path / 'tapes"""\nopen(1)\n'
    folder.mkdir()
    tape = folder / "t.db"
    code = INJECT.replace("MARKER", repr(str(marker)))
    source = textwrap.dedent("""
        import sys, calltape
        calltape.configure(tape=sys.argv[1])
        code = sys.argv[2]

        def f(x):
            if x:
                raise ValueError(code)
            return code

        def g(x):
            return [x, code]

        f.__qualname__ = "f" + code
        f.__module__ = "m" + code
        g.__qualname__ = "G.g" + code
        rf, rg = calltape.record(f), calltape.record(g)
        rf(0)
        try:
            rf(1)
        except ValueError:
            pass
        rg(code)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTAPE")}
    subprocess.run([sys.executable, "-c", source, str(tape), code], env=env, check=True,
                   timeout=60)
    return tmp_path, tape, marker


def _calltape(cwd, *args):
    exe = os.path.join(os.path.dirname(sys.executable), "calltape")
    command = [exe] if os.path.exists(exe) else [sys.executable, "-m", "calltape"]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=90)


@pytest.mark.parametrize("trust", [["--trust"], []])
def test_generated_module_compiles_and_runs_nothing(hostile_names, trust):
    root, tape, marker = hostile_names
    out = root / "test_generated.py"
    made = _calltape(root, "make-tests", tape, "--function", "*", "--out", out, *trust)
    assert made.returncode == 0, made.stderr
    text = out.read_text()
    compile(text, str(out), "exec")  # a SyntaxError here would mean text escaped a literal
    namespace = {"__file__": str(out), "__name__": "test_generated"}
    with pytest.raises(LookupError):  # resolve() cannot find the hostile module: that is all
        exec(compile(text, str(out), "exec"), namespace)
    assert not marker.exists(), "the generated module ran code from the tape"
    made_from = namespace.get("MADE_FROM")
    assert made_from is not None and made_from["tape"] == str(tape)
    assert any(INJECT[:9] in name for name in made_from["functions"])
    # collecting it with pytest runs nothing either
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--collect-only", str(out)], cwd=root, capture_output=True, text=True,
                         timeout=90)
    assert not marker.exists(), run.stdout
