"""Print one version's section of CHANGELOG.md: the notes of its GitHub release.

    python .github/changelog_section.py VERSION [CHANGELOG]

VERSION is written as in its heading, without the tag's "v": ``0.1.0`` finds
``## [0.1.0] - 2026-11-27`` (``Unreleased`` finds ``## [Unreleased]``).
CHANGELOG defaults to the CHANGELOG.md at the repository's root. Printed: the
lines between that heading and the next ``## `` heading (or the link
definitions that close the file), without blank lines at either end. Exit 1,
with a message on stderr, when the section is missing, empty or given twice.
Standard library only, Python 3.9+.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\](?:\s+-\s+.*)?\s*$")
NEXT = re.compile(r"^## |^\[[^\]]+\]:\s")  # the next section, or a link definition


def section(text: str, version: str) -> str:
    """Return ``version``'s section of ``text``; raise LookupError if it has none."""
    lines = text.splitlines()
    starts = [
        i for i, line in enumerate(lines) if (m := HEADING.match(line)) and m["version"] == version
    ]
    if not starts:
        raise LookupError(f"no '## [{version}]' section")
    if len(starts) > 1:
        raise LookupError(f"{len(starts)} '## [{version}]' sections")
    body: list[str] = []
    for line in lines[starts[0] + 1 :]:
        if NEXT.match(line):
            break
        body.append(line)
    notes = "\n".join(body).strip("\n")
    if not notes.strip():
        raise LookupError(f"the '## [{version}]' section is empty")
    return notes + "\n"


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[1].startswith("-"):
        print("usage: python .github/changelog_section.py VERSION [CHANGELOG]", file=sys.stderr)
        return 2
    path = Path(argv[2]) if len(argv) == 3 else Path(__file__).resolve().parents[1] / "CHANGELOG.md"
    try:
        sys.stdout.write(section(path.read_text(encoding="utf-8"), argv[1]))
    except (LookupError, OSError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
