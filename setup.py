"""Build of the C extension: the plain-C engine and the CPython binding,
linked against the system libsqlite3, with warnings on.

Set CALLTAPE_SANITIZE=1 to build with AddressSanitizer and
UndefinedBehaviorSanitizer (used by .ci/run)."""

import os
from glob import glob

from setuptools import Extension, setup

flags = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
         "-Wno-unused-parameter", "-Wno-cast-function-type", "-O2"]
link = ["-lsqlite3", "-lpthread", "-lm"]
if os.environ.get("CALLTAPE_SANITIZE"):
    flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    link += ["-fsanitize=address,undefined"]
if os.environ.get("CALLTAPE_WERROR"):
    flags.append("-Werror")

setup(
    ext_modules=[
        Extension(
            "calltape._native",
            # the engine, then the binding: module.c, sink.c and lifecycle.c at
            # the top, the ways in (record/, instruments/) and out (read/, replay/)
            sources=sorted(glob("src/engine/*.c"))
            + sorted(glob("src/calltape/_native/**/*.c", recursive=True)),
            include_dirs=["src/engine", "src/calltape/_native"],
            extra_compile_args=flags,
            extra_link_args=link,
        )
    ]
)
