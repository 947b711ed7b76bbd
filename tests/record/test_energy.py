"""Energy (RAPL through Linux powercap): recording with energy=True or
configure(energy=True), counter wrap, a machine without a DRAM zone or
without powercap at all, and the energy= search filter.

This machine has no powercap, so each test writes a powercap directory tree
of real files (package zone intel-rapl:0, a "core" subzone and a "dram"
subzone, found by its name file) and points CALLTAPE_POWERCAP_ROOT at it;
the recorded functions advance the counters by writing the files, which
calltape reads with pread() around each call.  Each test runs a fresh
interpreter: the counters are opened once per process."""

import json
import subprocess
import sys

import pytest
from _util import last_json, run_python

import calltape


def powercap(root, pkg=990, pkg_range=1000, dram=100, dram_range=1_000_000, with_dram=True):
    """Writes a powercap tree under `root` and returns it."""
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text(f"{pkg}\n")
    (zone / "max_energy_range_uj").write_text(f"{pkg_range}\n")
    core = zone / "intel-rapl:0:0"
    core.mkdir()
    (core / "name").write_text("core\n")
    (core / "energy_uj").write_text("7\n")
    if with_dram:
        d = zone / "intel-rapl:0:1"
        d.mkdir()
        (d / "name").write_text("dram\n")
        (d / "energy_uj").write_text(f"{dram}\n")
        (d / "max_energy_range_uj").write_text(f"{dram_range}\n")
    return root


RECORD = """
    import json, os, sys, warnings
    import calltape
    warnings.simplefilter("always")
    ZONE = os.path.join(os.environ["CALLTAPE_POWERCAP_ROOT"], "intel-rapl:0")

    def advance(pkg, dram=None):
        # what the machine does while the call runs: the counters move
        with open(os.path.join(ZONE, "energy_uj"), "w") as f:
            f.write(f"{pkg}\\n")
        if dram is not None:
            with open(os.path.join(ZONE, "intel-rapl:0:1", "energy_uj"), "w") as f:
                f.write(f"{dram}\\n")

    @calltape.record(energy=True)
    def measured(pkg, dram=None):
        advance(pkg, dram)

    @calltape.record
    def configured(pkg, dram=None):
        advance(pkg, dram)

    @calltape.record(energy=False)
    def never(pkg, dram=None):
        advance(pkg, dram)
"""


def energies(tape):
    return [(c.qualname, c.energy) for c in calltape.open(tape).calls()]


def test_energy_recorded_per_call_across_a_wrap(tmp_path):
    root = powercap(tmp_path / "powercap")
    tape = tmp_path / "e.db"
    proc = run_python(tmp_path, RECORD + """
    measured(20, 150)      # package wraps at 1000: 20 + 1000 - 990 = 30 uJ; DRAM 50 uJ
    measured(70, 160)      # 50 and 10
    configured(80, 170)    # energy follows configure(), off so far
    never(90, 180)
    calltape.configure(energy=True)
    configured(130, 200)   # 40 and 20
    never(140, 210)        # energy=False wins over configure()
    calltape.configure(energy=False)
    configured(150, 220)
    calltape.flush()
    """, tape=tape, env_extra={"CALLTAPE_POWERCAP_ROOT": str(root)})
    assert "RecordingWarning" not in proc.stderr
    assert energies(tape) == [
        ("measured", {"pkg": 30.0, "dram": 50.0}),
        ("measured", {"pkg": 50.0, "dram": 10.0}),
        ("configured", None),
        ("never", None),
        ("configured", {"pkg": 40.0, "dram": 20.0}),
        ("never", None),
        ("configured", None),
    ]


def test_machine_without_a_dram_zone(tmp_path):
    root = powercap(tmp_path / "powercap", pkg=5, pkg_range=10**12, with_dram=False)
    tape = tmp_path / "e.db"
    run_python(tmp_path, RECORD + """
    measured(25)
    measured(26)
    calltape.flush()
    """, tape=tape, env_extra={"CALLTAPE_POWERCAP_ROOT": str(root)})
    assert energies(tape) == [("measured", {"pkg": 20.0}), ("measured", {"pkg": 1.0})]


def test_no_powercap_warns_once_and_records_without_energy(tmp_path):
    missing = tmp_path / "no-powercap"
    tape = tmp_path / "e.db"
    proc = run_python(tmp_path, """
    import json, warnings
    import calltape
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = calltape.record(energy=True)(lambda x: x * 2)
        calltape.configure(energy=True)
        g = calltape.record(lambda x: x + 1)
        out = [f(1), f(2), g(3)]
    calltape.flush()
    print(json.dumps({"out": out, "warnings": [
        (w.category.__name__, str(w.message)) for w in caught]}))
    """, tape=tape, env_extra={"CALLTAPE_POWERCAP_ROOT": str(missing)})
    got = last_json(proc)
    assert got["out"] == [2, 4, 4]
    assert len(got["warnings"]) == 1
    category, message = got["warnings"][0]
    assert category == "RecordingWarning"
    assert f"{missing}/intel-rapl:0/energy_uj: No such file or directory" in message
    assert "recorded without energy" in message
    assert [e for _, e in energies(tape)] == [None, None, None]


def test_warnings_as_errors_do_not_break_the_program(tmp_path):
    tape = tmp_path / "e.db"
    proc = run_python(tmp_path, """
    import calltape
    f = calltape.record(energy=True)(lambda x: x * 2)
    print(f(21))
    """, tape=tape, flags=("-W", "error"),
        env_extra={"CALLTAPE_POWERCAP_ROOT": str(tmp_path / "none")})
    assert proc.stdout.split() == ["42"]


@pytest.fixture
def energy_tape(tmp_path):
    """Six calls with known energies (pkg 10..60 uJ, dram 5..30 uJ) and two
    calls recorded without energy."""
    root = powercap(tmp_path / "powercap", pkg=0, pkg_range=10**12, dram=0)
    tape = tmp_path / "e.db"
    run_python(tmp_path, RECORD + """
    pkg = dram = 0
    for i in range(1, 7):
        pkg += 10 * i
        dram += 5 * i
        measured(pkg, dram)          # pkg 10, 20, ..., 60; dram 5, 10, ..., 30
    never(pkg + 1, dram + 1)
    configured(pkg + 2, dram + 2)
    calltape.flush()
    """, tape=tape, env_extra={"CALLTAPE_POWERCAP_ROOT": str(root)})
    return calltape.open(tape)


def test_energy_filter(energy_tape):
    t = energy_tape
    pkg = sorted(c.energy["pkg"] for c in t.search(function="measured"))
    assert pkg == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert sorted(c.energy["pkg"] for c in t.search(energy={"pkg": 30.0})) == [10.0, 20.0, 30.0]
    assert sorted(c.energy["pkg"] for c in t.search(energy={"pkg": 29.9})) == [10.0, 20.0]
    assert sorted(c.energy["dram"] for c in t.search(energy={"dram": 12})) == [5.0, 10.0]
    both = t.search(energy={"pkg": 50.0, "dram": 20.0})
    assert sorted((c.energy["pkg"], c.energy["dram"]) for c in both) == [
        (10.0, 5.0), (20.0, 10.0), (30.0, 15.0), (40.0, 20.0)]
    # calls without energy readings never match an energy filter
    assert len(t.search()) == 8
    assert len(t.search(energy={"pkg": 1e18})) == 6
    assert len(t.search(function="never", energy={"pkg": 1e18})) == 0
    assert len(t.search(energy={})) == 8
    # combined with other filters, order and limit
    newest = t.search(function="meas*", energy={"pkg": 45}, order="newest", limit=2)
    assert [c.energy["pkg"] for c in newest] == [40.0, 30.0]
    assert [c.args["pkg"] for c in t.search(energy={"pkg": 10}, args={"pkg": 10})] == [10]
    assert len(t.search(energy={"pkg": 10}, args={"pkg": 30})) == 0
    with pytest.raises(ValueError, match="unknown energy domain 'gpu'"):
        t.search(energy={"gpu": 1.0})


def test_energy_on_the_command_line(energy_tape):
    c = energy_tape.search(function="measured", limit=1)[0]
    shown = cli("show", energy_tape.path, c.id).stdout
    assert "energy    pkg 60.0 uJ, dram 30.0 uJ" in shown
    as_json = json.loads(cli("show", energy_tape.path, c.id, "--json").stdout)
    assert as_json["energy"] == {"pkg": 60.0, "dram": 30.0}
    plain = energy_tape.search(function="never")[0]
    assert "  energy " not in cli("show", energy_tape.path, plain.id).stdout
    assert json.loads(cli("show", energy_tape.path, plain.id, "--json").stdout)["energy"] is None


def test_energy_filter_on_the_command_line(energy_tape):
    found = json.loads(cli("search", energy_tape.path, "--energy", "pkg=35", "--energy",
                           "dram=12", "--json").stdout)
    assert sorted(r["energy"]["pkg"] for r in found) == [10.0, 20.0]
    proc = cli("search", energy_tape.path, "--energy", "pkg=lots", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("calltape: cannot read the energy bound 'pkg=lots': use"
                                   " DOMAIN=MICROJOULES, such as pkg=100 or dram=50")
    proc = cli("search", energy_tape.path, "--energy", "gpu=3", check=False)
    assert proc.returncode == 2 and "unknown energy domain 'gpu'" in proc.stderr


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "calltape", *map(str, args)],
                          capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc
