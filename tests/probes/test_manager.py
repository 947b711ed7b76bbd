"""calltape.probes.manager: specs applied, updated and removed; applied per process."""

import datetime
import os
import socket

import probe_subjects as S

from calltape import probes
from calltape.probes import InstrumentManager, MemoryStore


def spec(target, type_="count", value="1", event="call", lifespan=None, when=None):
    return {"target": target,
            "instrument": {"type": type_, "name": "m", "value": value, "event": event, "custom": {}},
            "lifespan": lifespan, "lastmodified": when or datetime.datetime.now(datetime.UTC),
            "applied": {}}


def test_apply_update_remove_cycle():
    m = probes.manager
    m.specs["a"] = spec("probe_subjects.Cart.add")
    m.apply()
    key = f"{socket.gethostname()}:{os.getpid()}"
    assert m.specs["a"]["applied"][key]["error"] is None
    S.Cart.add(1, 2)
    probe = probes.active_probes["probe_subjects.Cart.add"]
    assert probe.instruments["spec:a"].count == 1
    # updated: a new lastmodified replaces the instrument
    m.specs["a"] = spec("probe_subjects.Cart.add", value="a")
    m.apply()
    S.Cart.add(5, 2)
    assert probe.instruments["spec:a"].count == 5
    # the same lastmodified again: nothing changes
    m.apply()
    S.Cart.add(1, 0)
    assert probe.instruments["spec:a"].count == 6
    del m.specs["a"]
    m.apply()
    assert "probe_subjects.Cart.add" not in probes.active_probes and not probe.running


def test_errors_at_apply_and_fire_time_show_in_applied():
    m = InstrumentManager(process="worker-1")
    m.instrument_classes.update(probes.manager.instrument_classes)
    m.specs["missing"] = spec("probe_subjects.no_such_function")
    m.specs["badtype"] = spec("probe_subjects.Cart.add", type_="nope")
    m.specs["syntax"] = spec("probe_subjects.Cart.add", value="1 +")
    m.specs["fire"] = spec("probe_subjects.Cart.total", type_="hist", value="'x'", event="return")
    m.apply()
    applied = {k: v["applied"]["worker-1"] for k, v in m.specs.items()}
    assert "has no attribute 'no_such_function'" in applied["missing"]["error"]
    assert "no instrument class 'nope'" in applied["badtype"]["error"]
    assert applied["syntax"]["error"].startswith("SyntaxError")
    assert applied["fire"]["error"] is None and applied["fire"]["errors"] == []
    assert S.Cart([1]).total() == 1  # the target is untouched
    m.apply()
    errors = m.specs["fire"]["applied"]["worker-1"]["errors"]
    assert errors[0][1:] == ("return", "TypeError: a histogram takes ints and floats, not str")
    assert isinstance(errors[0][0], float)
    m.remove_all()


def test_lifespan_from_lastmodified():
    m = probes.manager
    old = (datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # naive UTC, as utcnow()
           - datetime.timedelta(minutes=5))
    m.specs["old"] = spec("probe_subjects.Cart.add", lifespan=1, when=old)
    m.apply()
    S.Cart.add(1, 1)
    probe = probes.active_probes.get("probe_subjects.Cart.add")
    assert probe is None or not probe.running  # expired at its first event
    m.apply()
    assert next(iter(m.specs["old"]["applied"].values()))["expired"] is True


def test_background_apply_picks_up_new_specs():
    m = InstrumentManager(MemoryStore())
    m.instrument_classes["count"] = probes.CountInstrument
    m.apply_in_background(0.02)
    try:
        m.specs["bg"] = spec("probe_subjects.Cart.Line.cost")
        for _ in range(200):
            if m.specs["bg"]["applied"]:
                break
            import time
            time.sleep(0.01)
        assert next(iter(m.specs["bg"]["applied"].values()))["error"] is None
        S.Cart.Line().cost(1, 2)
    finally:
        m.stop_background()
        m.remove_all()


class RefusingOnce(MemoryStore):
    """A user's spec store that cannot take the first fire-time report."""

    refused = 0

    def mark(self, spec_id, process, info):
        if info["errors"] and not self.refused:
            self.refused += 1
            raise OSError("the store is away")
        super().mark(spec_id, process, info)


def test_a_refused_report_is_made_again_at_the_next_apply(caplog):
    m = InstrumentManager(RefusingOnce(), process="w")
    m.instrument_classes["count"] = probes.CountInstrument
    m.specs["z"] = spec("probe_subjects.Cart.add", value="a / 0")
    m.apply()
    try:
        S.Cart.add(1, 2)  # the instrument fails: an error at fire time
        m.apply()  # its report refused (a warning)
        assert m.specs.refused == 1 and m.specs["z"]["applied"]["w"]["errors"] == []
        assert "refused the applied report: the store is away" in caplog.text
        assert "Traceback" not in caplog.text  # one sentence, not our internals
        m.apply()  # made again, and taken
        assert "ZeroDivisionError" in m.specs["z"]["applied"]["w"]["errors"][0][2]
    finally:
        m.remove_all()
