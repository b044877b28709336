"""Run a snippet in a fresh interpreter with the same elmstate and core as a test's ``elm``.

For checks whose failure would take the test process down with it (a segfault,
a C stack overflow) or poison the rest of the session (a dead or stuck shared
timer thread). The snippet imports ``elmstate`` itself; ``ELMSTATE_NO_EXTENSIONS``
is set or removed to match the core under test, as in tests/test_leaks.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import ModuleType

from _helpers import subprocess_env

# Every snippet starts with these: ``elm``, and two helpers most of them use.
HELPERS = """
import time as _time


def wait_until(predicate, timeout=2.0):
    deadline = _time.monotonic() + timeout
    while not predicate() and _time.monotonic() < deadline:
        _time.sleep(0.005)
    return predicate()


def deadlines_fire():
    began = _time.monotonic()
    fired = elm.Context(timeout=0.05).wait(2)
    return fired and _time.monotonic() - began < 1.5
"""


def run_python(
    elm: ModuleType, code: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) with ``python -c``; returns the finished process."""
    env = subprocess_env(elm)
    preamble = (
        "import elmstate as elm\n"
        f"assert elm.compiled is {bool(elm.compiled)!r}, 'the subprocess picked the wrong core'\n"
        + HELPERS
    )
    return subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def report(proc: subprocess.CompletedProcess[str]) -> str:
    """The exit status and output of ``proc``, for an assertion message."""
    status = proc.returncode
    if status < 0:
        status_text = f"killed by signal {-status}"
    else:
        status_text = f"exit {status}"
    return f"{status_text}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
