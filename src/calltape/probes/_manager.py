"""The instrument manager: specs (from a store) applied as probes in this process.

A spec, as Diagnose wrote them::

    {"target": "pkg.mod.Class.method",
     "instrument": {"type": "log", "name": "m", "value": "result", "event": "return",
                    "custom": {}},
     "lifespan": 10,                      # minutes from lastmodified, or None
     "lastmodified": datetime.datetime.utcnow(),
     "applied": {}}                       # filled per process: see InstrumentManager

Probe expressions are code: a manager applies specs only from the store it
was given (``InstrumentManager(store=...)`` or ``manager.specs = store``).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from .._markers import TapeError

_log = logging.getLogger("calltape.probes")


class SpecStore(Protocol):
    """What a manager reads specs from and reports to.

    - ``snapshot()``: every spec, id -> spec dict, read at once (one query per
      ``apply()``, not one per spec);
    - ``mark(spec_id, process, info)``: stores ``info`` (lastmodified, error,
      errors) as ``spec["applied"][process]``;
    - and the mapping methods (``[id] = spec``, ``del``, ``get``, ``items``),
      for the programs that add and remove specs.
    """

    def snapshot(self) -> dict[str, dict[str, Any]]: ...

    def mark(self, spec_id: str, process: str, info: dict[str, Any]) -> None: ...

    def __setitem__(self, spec_id: str, spec: dict[str, Any]) -> None: ...

    def __delitem__(self, spec_id: str) -> None: ...


class MemoryStore(dict):
    """The default store: a dict of this process (id -> spec)."""

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return dict(self)

    def mark(self, spec_id: str, process: str, info: dict[str, Any]) -> None:
        spec = self.get(spec_id)
        if spec is not None:
            spec.setdefault("applied", {})[process] = info


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    raise TypeError(f"a probe spec holds {type(v).__name__}, which a tape cannot keep")


class TapeStore:
    """Specs kept on a tape (SQLite file or PostgreSQL URL), shared by every
    process recording onto it and by ``calltape probe add|list|remove``.

    ``snapshot()`` costs one query when nothing changed since the last one
    (the tape's specs version), and one read otherwise, over one read
    connection the store keeps open (opened again in a forked child:
    ``reader.opens`` and ``reader.queries`` count them); a SQLite tape that
    does not exist yet has no specs.  ``mark()`` writes this process's report
    onto the tape, where ``calltape probe list`` shows it.  Usage::

        manager.specs = calltape.probes.TapeStore("run.tape")
        manager.apply_in_background(30)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from .. import _native

        self.path = os.fspath(path)
        self._version = -1
        self._specs: dict[str, dict[str, Any]] = {}
        self.reader = _native.SpecReader(_native, self.path)

    def _read(self) -> dict[str, dict[str, Any]]:
        import json

        version, rows = self.reader.read()
        specs: dict[str, dict[str, Any]] = {}
        for spec_id, text, process, info in rows:
            spec = specs.get(spec_id)
            if spec is None:
                spec = specs[spec_id] = json.loads(text)
                spec["applied"] = {}
            if process is not None:
                spec["applied"][process] = json.loads(info)
        self._version = version
        return specs

    def snapshot(self) -> dict[str, dict[str, Any]]:
        if "://" not in self.path and not os.path.exists(self.path):
            self._version, self._specs = -1, {}  # no tape yet: nothing to apply
            return {}
        if self._version < 0 or self.reader.version() != self._version:
            self._specs = self._read()
        return {k: dict(v) for k, v in self._specs.items()}

    def items(self) -> Any:
        """Every spec with every process's report, read now."""
        return self._read().items()

    def get(self, spec_id: str, default: Any = None) -> Any:
        return self._read().get(spec_id, default)

    def __getitem__(self, spec_id: str) -> dict[str, Any]:
        return self._read()[spec_id]

    def __contains__(self, spec_id: object) -> bool:
        return spec_id in self._read()

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __setitem__(self, spec_id: str, spec: dict[str, Any]) -> None:
        import json

        from .. import _native

        spec = {k: v for k, v in spec.items() if k != "applied"}
        spec.setdefault("lastmodified", datetime.datetime.now(datetime.UTC).isoformat())
        _native.probe_specs(self.path, "put", spec_id,
                            json.dumps(spec, default=_json_default, sort_keys=True))

    def __delitem__(self, spec_id: str) -> None:
        from .. import _native

        if not _native.probe_specs(self.path, "delete", spec_id):
            raise KeyError(spec_id)

    def mark(self, spec_id: str, process: str, info: dict[str, Any]) -> None:
        import json

        from .. import _native

        _native.probe_specs(self.path, "mark", spec_id, process,
                            json.dumps(info, default=_json_default, sort_keys=True))


def _utc(t: Any) -> datetime.datetime | None:
    if t is None:
        return None
    if isinstance(t, (int, float)):
        return datetime.datetime.fromtimestamp(t, datetime.UTC)
    if isinstance(t, str):
        t = datetime.datetime.fromisoformat(t)
    if t.tzinfo is None:  # utcnow(), as Diagnose's documents write it
        t = t.replace(tzinfo=datetime.UTC)
    return t


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Applied:
    __slots__ = ("instrument", "key", "lastmodified", "probe", "reported", "spec_id")

    def __init__(self, spec_id: str, lastmodified: Any) -> None:
        self.spec_id = spec_id
        self.lastmodified = lastmodified
        self.probe: Any = None
        self.key: Any = None
        self.instrument: Any = None
        self.reported = -1


class InstrumentManager:
    """Applies the specs of ``specs`` (a SpecStore; a MemoryStore by default)
    to this process: ``apply()`` attaches what is new or changed (by
    ``lastmodified``), detaches what was removed or expired, and reports per
    process in each spec's ``applied``: ``{"lastmodified", "error", "time",
    "errors"}`` (the error at apply time, or None; the errors at fire time, as
    (unix time, event, message)), keyed by ``process`` (``host:pid`` unless named)."""

    def __init__(self, store: SpecStore | None = None, process: str | None = None) -> None:
        self.instrument_classes: dict[str, type] = {}
        self.global_namespace: dict[str, Any] = {}
        self.specs: SpecStore = store if store is not None else MemoryStore()
        self._process = process
        self._applied: dict[str, _Applied] = {}
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def process(self) -> str:
        """This process's key in ``applied``: the name given, else host:pid
        (read each time, so a forked child reports as itself)."""
        return self._process or f"{socket.gethostname()}:{os.getpid()}"

    @process.setter
    def process(self, name: str | None) -> None:
        self._process = name

    def apply(self) -> None:
        """Brings this process's probes in line with the specs (one read)."""
        from . import attach_to

        with self._lock:
            specs = self.specs.snapshot()
            for spec_id in [s for s in self._applied if s not in specs]:
                self._detach(self._applied.pop(spec_id))
            for spec_id, spec in specs.items():
                done = self._applied.get(spec_id)
                lm = spec.get("lastmodified")
                if done is not None and done.lastmodified == lm:
                    self._report(done, spec)
                    continue
                old, done = done, _Applied(spec_id, lm)
                self._applied[spec_id] = done
                try:
                    inst = self._make(spec)
                    probe = attach_to(spec["target"])
                    done.probe, done.key, done.instrument = probe, f"spec:{spec_id}", inst
                    if old is not None and old.probe is not probe:
                        self._detach(old)  # another target now
                    probe.instruments[done.key] = inst  # replaces the old one in place
                    probe.start()
                    self._mark(done, spec, None)
                except Exception as exc:  # noqa: BLE001 - reported in applied, never raised
                    if old is not None:
                        self._detach(old)
                    self._mark(done, spec, _describe(exc))

    def _make(self, spec: dict[str, Any]) -> Any:
        ins = spec["instrument"]
        kind = ins.get("type")
        cls = self.instrument_classes.get(kind)
        if cls is None:
            raise LookupError(f"no instrument class {kind!r} in instrument_classes"
                              f" ({', '.join(sorted(self.instrument_classes))})")
        expires = None
        lifespan = spec.get("lifespan")
        if lifespan is not None:
            base = _utc(spec.get("lastmodified")) or datetime.datetime.now(datetime.UTC)
            expires = (base + datetime.timedelta(minutes=float(lifespan))).timestamp()
        return cls(ins.get("name") or spec.get("target"), ins.get("value", "1"),
                   event=ins.get("event", "return"), expires=expires,
                   custom=ins.get("custom") or {},
                   disable_on_error=bool(ins.get("disable_on_error", False)))

    def _detach(self, done: _Applied) -> None:
        if done.probe is not None:
            done.probe.instruments.pop(done.key, None)
            if not done.probe.instruments:
                done.probe.stop()

    def _mark(self, done: _Applied, spec: dict[str, Any], error: str | None) -> None:
        inst = done.instrument
        reported = inst.nerrors if inst is not None else 0  # before the errors are read
        info = {"lastmodified": spec.get("lastmodified"), "error": error,
                "time": datetime.datetime.now(datetime.UTC).isoformat(),
                "errors": list(inst.errors) if inst is not None else [],
                "expired": bool(inst.expired) if inst is not None else False}
        try:
            self.specs.mark(done.spec_id, self.process, info)
        except (TapeError, OSError) as exc:  # the tape or the store is away: one sentence
            _log.warning("probe spec %r: the store refused the applied report: %s",
                         done.spec_id, exc)
            return  # reported again at the next apply
        except Exception:  # noqa: BLE001 - a store that cannot take it: the probes still run
            _log.warning("probe spec %r: the store refused the applied report", done.spec_id,
                         exc_info=True)
            return
        done.reported = reported

    def _report(self, done: _Applied, spec: dict[str, Any]) -> None:
        inst = done.instrument
        if inst is not None and (inst.nerrors != done.reported or inst.expired):
            self._mark(done, spec, None)

    def remove_all(self) -> None:
        """Detaches every probe this manager applied."""
        with self._lock:
            for done in self._applied.values():
                self._detach(done)
            self._applied.clear()

    def apply_in_background(self, period: float = 60) -> threading.Thread:
        """Calls ``apply()`` now and then every ``period`` seconds on a daemon
        thread, until ``stop_background()``.  Returns the thread."""
        self.stop_background()
        self._stop.clear()

        def cycle() -> None:
            while True:
                try:
                    self.apply()
                except (TapeError, OSError) as exc:  # one sentence: the next period tries again
                    _log.warning("applying the probe specs failed: %s", exc)
                except Exception:  # noqa: BLE001 - the next period tries again
                    _log.warning("applying the probe specs failed", exc_info=True)
                if self._stop.wait(period):
                    return

        self._thread = threading.Thread(target=cycle, name="calltape-probes-manager", daemon=True)
        self._thread.start()
        return self._thread

    def stop_background(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def __iter__(self) -> Iterator[str]:
        return iter(self._applied)


__all__ = ["InstrumentManager", "MemoryStore", "SpecStore", "TapeStore"]
