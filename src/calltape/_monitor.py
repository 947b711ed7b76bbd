"""``calltape.monitor``: record every call of chosen code without decorators.

The hooks and every decision are in C (``_native.Monitor``); this module only
works out the directories that are never recorded unless named by module
(the standard library, site-packages, calltape itself).

>>> with calltape.monitor(include=["shop"], exclude=["shop.vendor.*"]):
...     run_the_shop()
"""

from __future__ import annotations

import os
import site
import sysconfig
from collections.abc import Iterable

from . import _native


def _as_dir(path: str) -> str:
    return path if path.endswith(os.sep) else path + os.sep


def never_recorded() -> list[str]:
    """Directories whose code is recorded only when its module is included by name."""
    dirs = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    dirs.add(site.getusersitepackages())
    dirs.add(os.path.dirname(os.path.abspath(__file__)))
    for p in list(dirs):  # the paths code objects carry may be unresolved
        dirs.add(os.path.realpath(p))
    return sorted(p if p.endswith(os.sep) else p + os.sep for p in dirs if p)


# calltape's own modules, never recorded even under include=["calltape"]
# (which `calltape run -m calltape.examples.shop` implies).  "[c]alltape"
# matches the module "calltape" alone, not the packages under it.
_OWN = ("[c]alltape", "calltape._*", "calltape.cli", "calltape.__main__")


def monitor(include: str | Iterable[str] = (), *, exclude: str | Iterable[str] = (),
            paths: Iterable[str | os.PathLike[str]] = (), args: bool = True,
            result: bool = True, cpu: bool = False, memory: bool = False, energy: bool = False,
            locals: bool = False, globals: bool = False,
            tape: str | os.PathLike[str] | None = None, max_depth: int = 0, sample: int = 1,
            max_value_bytes: int | None = None, max_value_depth: int = 0) -> _native.Monitor:
    """A monitor that records the calls of the chosen code while it runs.

    ``include``: packages or modules to record (``"shop"`` covers ``shop.*``);
    ``paths``: directories whose code is recorded; with neither, all code
    outside the standard library and site-packages.  ``exclude``: module
    names or glob patterns on ``module``, ``module.qualname`` or ``qualname``.
    ``cpu``, ``memory``, ``energy``, ``locals`` (the frame's locals at return
    or raise), ``globals`` (the module globals the function reads, at entry):
    as for ``@calltape.record``.
    ``max_depth``: record no call nested deeper than this many recorded calls
    (0: no limit); ``sample``: record one call in N of each function.

    >>> with calltape.monitor(include=["shop"]):
    ...     run_the_shop()
    >>> m = calltape.monitor(paths=["src/"], args=False, result=False).start()
    >>> m.stop()
    """
    resolved = []
    for p in paths:
        p = os.fspath(p)
        # code objects carry the path the program was reached by (through
        # symlinks or not): both spellings are recorded
        for spelling in dict.fromkeys((os.path.abspath(p), os.path.realpath(p))):
            resolved.append(_as_dir(spelling) if os.path.isdir(p) else spelling)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    return _native.Monitor(include, [*exclude, *_OWN], paths=resolved, never=never_recorded(), args=args,
                           result=result, cpu=cpu, memory=memory, energy=energy, locals=locals,
                           globals=globals, tape=tape,
                           max_depth=max_depth, sample=sample,
                           max_value_bytes=max_value_bytes,
                           max_value_depth=max_value_depth)


def _start_from_environment() -> None:
    """Start the monitor a parent ``calltape run`` described in CALLTAPE_MONITOR
    (a child process: spawn and forkserver workers, subprocesses)."""
    import json

    monitor(**json.loads(os.environ["CALLTAPE_MONITOR"])).start()  # runs until exit
