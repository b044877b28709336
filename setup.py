"""Builds the compiled core only; metadata lives in pyproject.toml.

ELMSTATE_NO_EXTENSIONS=1  build a pure-Python package (no compiler needed).
ELMSTATE_CYTHON_TRACE=1   a debug build: -O0 -g3 and Cython line tracing, for
                          coverage of _core.pyx through Cython.Coverage.
"""

import os
import sys

from setuptools import Extension, setup

NO_EXTENSIONS = bool(os.environ.get("ELMSTATE_NO_EXTENSIONS"))
TRACE = bool(os.environ.get("ELMSTATE_CYTHON_TRACE"))

ext_modules = []
if not NO_EXTENSIONS:
    from Cython.Build import cythonize

    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if TRACE else []
    if sys.platform == "win32":
        extra = ["/Od", "/Zi"] if TRACE else ["/O2"]
    else:
        extra = ["-O0", "-g3"] if TRACE else ["-O3", "-g0"]  # -g0: a 10x smaller wheel
    ext_modules = cythonize(
        [
            Extension(
                "elmstate._core",
                ["src/elmstate/_core.pyx"],
                define_macros=macros,
                extra_compile_args=extra,
            )
        ],
        compiler_directives={
            "language_level": 3,
            "embedsignature": True,
            "linetrace": TRACE,
        },
    )

setup(ext_modules=ext_modules)
