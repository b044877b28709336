"""The version is written once, as ``elmstate.__version__``, and nothing drifts from it.

The build reads it into the distribution's metadata (``dynamic = ["version"]``
in pyproject.toml); the release job refuses a tag that is not ``v`` + it, or one
that CHANGELOG.md has no section for.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".github" / "changelog_section.py"


def test_installed_metadata_has_the_package_version(elm: ModuleType) -> None:
    # Also catches a __version__ that is not in PEP 440's normal form: the
    # metadata would hold the normalised spelling, and the tag check would fail.
    assert importlib.metadata.version("elmstate") == elm.__version__


def test_the_version_is_a_plain_literal(elm: ModuleType) -> None:
    """setuptools reads the version without importing the package only from a literal."""
    tree = ast.parse(Path(elm.__file__).read_text(encoding="utf-8"))
    values = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(target, "id", None) for target in node.targets] == ["__version__"]
    ]
    assert len(values) == 1
    assert isinstance(values[0], ast.Constant)
    assert values[0].value == elm.__version__


@pytest.mark.skipif(not SCRIPT.is_file(), reason="not a checkout: no .github/ (an sdist)")
def test_the_changelog_has_a_section_for_the_version(elm: ModuleType) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), elm.__version__, str(ROOT / "CHANGELOG.md")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
