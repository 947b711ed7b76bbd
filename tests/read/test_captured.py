"""Every call says how it was captured: `Call.captured`, `search(captured=)`,
`calltape search --captured` and the line `calltape show` prints."""

import json
import os
import subprocess
import sys
import sysconfig
import textwrap

import pytest
from _util import open_tape

import calltape

CALLTAPE = os.path.join(sysconfig.get_path("scripts"), "calltape")


def cli(cwd, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CALLTAPE_"))}
    proc = subprocess.run([CALLTAPE, *map(str, args)], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """A tape holding one program's calls under `calltape run` (the monitor)
    and, in the same program, a function under @calltape.record."""
    folder = tmp_path_factory.mktemp("captured")
    (folder / "app.py").write_text(textwrap.dedent("""
        import calltape

        def plain(x):
            return x + 1

        @calltape.record
        def decorated(x):
            return plain(x) * 2

        if __name__ == "__main__":
            print(decorated(3), plain(4))
    """))
    cli(folder, "run", "--tape", folder / "t.db", "app.py")
    return folder


def test_each_call_names_its_way_in(both):
    with open_tape(both / "t.db", flush=False) as tape:
        calls = list(tape.search(order="oldest"))
        by = {(c.qualname, c.captured) for c in calls}
    assert ("decorated", "decorator") in by
    assert ("plain", "monitor") in by
    assert {c.captured for c in calls} <= {"decorator", "monitor"}


def test_the_monitors_shortest_records_name_it_too(tmp_path):
    # without results, and raised calls, take the monitor's short record path
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        def plain(x):
            return x + 1

        def bad():
            raise ValueError("no")

        plain(1)
        try:
            bad()
        except ValueError:
            pass
    """))
    cli(tmp_path, "run", "--no-result", "--tape", tmp_path / "t.db", "app.py")
    with open_tape(tmp_path / "t.db", flush=False) as tape:
        got = {(c.qualname, c.outcome, c.captured) for c in tape.search()}
    assert ("plain", "returned", "monitor") in got and ("bad", "raised", "monitor") in got
    assert {cap for _, _, cap in got} == {"monitor"}


def test_search_filters_on_the_capture(both):
    with open_tape(both / "t.db", flush=False) as tape:
        monitor = list(tape.search(captured="monitor"))
        decorator = list(tape.search(captured="decorator"))
        assert monitor and all(c.captured == "monitor" for c in monitor)
        assert [c.qualname for c in decorator] == ["decorated"]
        assert list(tape.search(captured="flat")) == []
        with pytest.raises(ValueError, match="captured must be 'decorator', 'monitor'.*not 'x'"):
            tape.search(captured="x")


def test_the_command_line_shows_and_filters_it(both):
    out = cli(both, "search", "t.db", "--captured", "decorator", "--json")
    rows = json.loads(out)
    assert [r["qualname"] for r in rows] == ["decorated"]
    assert rows[0]["captured"] == "decorator"
    shown = cli(both, "show", "t.db", rows[0]["id"])
    assert "captured by @calltape.record" in shown
    with open_tape(both / "t.db", flush=False) as tape:
        plain = next(iter(tape.search("plain", captured="monitor")))
    assert "captured by the monitor (calltape.monitor)" in cli(both, "show", "t.db", plain.id)


def test_a_monitor_in_process_captures_as_monitor(tmp_path):
    script = tmp_path / "m.py"
    script.write_text(textwrap.dedent("""
        import sys, calltape
        calltape.configure(tape=sys.argv[1])

        def work(n):
            return n * 3

        with calltape.monitor(include=["__main__"]):
            work(2)
        calltape.flush()
    """))
    subprocess.run([sys.executable, str(script), str(tmp_path / "m.db")], check=True,
                   timeout=60, env={k: v for k, v in os.environ.items()
                                    if not k.startswith("CALLTAPE_")})
    with open_tape(tmp_path / "m.db", flush=False) as tape:
        (c,) = tape.search("work")
        assert c.captured == "monitor"
    assert calltape.Call.captured.__doc__.startswith("how the call was captured")
