"""Regenerate README.md's quick-scale claims table from stored reproduce dirs (never typed by hand).

    python tools/readme_claims.py runs/reproduce/two-layer-quick runs/reproduce/sample-complexity-quick runs/reproduce/deep-quick

replaces the text between the markers <!-- claims-table:begin --> and <!-- claims-table:end -->.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from studentspec.paper.report import markdown_table

BEGIN, END = "<!-- claims-table:begin -->", "<!-- claims-table:end -->"


def update(readme: Path, dirs: list[str]) -> None:
    """Write the generated table between the markers of `readme`."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: markers {BEGIN} ... {END} not found")
    table = markdown_table(dirs)
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{table}\n{END}", text, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    update(Path(__file__).resolve().parents[1] / "README.md", sys.argv[1:])
