"""Memory stays flat while millions of messages stream through ``run`` (both cores).

Each leg runs tests/leak_run.py in a fresh interpreter, so its resident memory is
its own; the script fails (exit 1) if RSS grew by more than 10 MB after warm-up.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from _helpers import subprocess_env

SCRIPT = Path(__file__).with_name("leak_run.py")
MESSAGES = 5_000_000


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_streaming_millions_of_messages_keeps_memory_flat(elm: ModuleType) -> None:
    env = subprocess_env(elm)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(MESSAGES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, report
    expected = "compiled" if elm.compiled else "pure"
    assert f"core: {expected}\n" in proc.stdout, report
    assert f"module: elmstate.{'_core' if elm.compiled else '_core_py'}\n" in proc.stdout, report
    assert f"messages: {MESSAGES}\n" in proc.stdout, report
    assert "OK" in proc.stdout.splitlines(), report
