"""README.md: its first commands are the two a newcomer needs, and its example runs.

The docs under docs/ are checked by Sphinx's doctest builder (see .ci/run); the
README is not part of that site, so its one Python example is run here, on
whichever core is live, and must print exactly the output block that follows it.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"

COMMANDS = (
    "```sh\n"
    "# install, then run the demo: two nested counters in all three modes\n"
    "pip install . && python examples/counters.py\n"
    "```\n"
    "\n"
    "```sh\n"
    "# install with the test extras, then run the suite against both cores\n"
    "pip install '.[test]' && pytest\n"
    "```\n"
)


def fenced(text: str, info: str) -> list[str]:
    return re.findall(rf"^```{info}\n(.*?)^```$", text, re.S | re.M)


def test_the_two_commands_come_first() -> None:
    assert README.read_text(encoding="utf-8").startswith(COMMANDS)


def test_the_example_prints_what_the_readme_shows() -> None:
    text = README.read_text(encoding="utf-8")
    (code,) = fenced(text, "python")
    (shown,) = fenced(text, "text")
    assert text.index(code) < text.index(shown)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert out.getvalue() == shown
