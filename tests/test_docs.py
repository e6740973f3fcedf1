"""The documentation stays true to the code: the module map and the README's links.

`make docs` (mkdocs build --strict, in .ci/run) checks the site's own links and docstrings; these checks need
no mkdocs and run with the suite.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "studentspec"


def _mapped_paths() -> set[str]:
    """The paths in the first column of docs/architecture.md's tables (the layers and the module map)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    cells = re.findall(r"^\| ([^|]+) \|", text, flags=re.M)
    return {p for cell in cells for p in re.findall(r"`([\w/.]+)`", cell)}


def test_every_module_is_in_the_architecture_map():
    mapped = _mapped_paths()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if path.name == "__init__.py" and not path.read_text().strip():
            continue  # an empty package marker
        # mapped by its own row, by its folder's row (a registry folder: activations/, data/), or, for a package's
        # __init__.py, by its layer's row
        folders = {f"{p.as_posix()}/" for p in rel.parents if len(p.parts) >= (1 if path.name == "__init__.py" else 2)}
        if rel.as_posix() not in mapped and not folders & mapped:
            missing.append(rel.as_posix())
    assert not missing, f"modules missing from docs/architecture.md's module map: {missing}"


def test_every_path_in_the_architecture_map_exists():
    absent = [p for p in _mapped_paths() if not (PACKAGE / p).exists()]
    assert not absent, f"docs/architecture.md names paths that do not exist: {absent}"


def test_the_readme_is_a_front_door_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150, "README.md is the front door (about 150 lines); the reference lives in docs/"
    assert "<!-- claims-table:begin -->" in text and "<!-- claims-table:end -->" in text  # tools/readme_claims.py writes there
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    broken = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert links and not broken, f"README.md links to missing files: {broken}"
