"""The documentation stays true to the code: the generated config page, the module map, the README's links.

`make docs` (mkdocs build --strict, in .ci/run) checks the site's own links and docstrings; these checks need
no mkdocs and run with the suite.
"""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "studentspec"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_page_is_generated_from_the_current_models():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == _tool("config_reference").render(), "docs/configuration.md is stale: run `python tools/config_reference.py`"


def test_every_config_key_is_on_the_configuration_page():
    from pydantic import BaseModel

    from studentspec.config import Config

    page = (ROOT / "docs" / "configuration.md").read_text()
    keys = []
    for name, field in Config.model_fields.items():
        section = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        keys += [f"{name}.{sub}" for sub in section.model_fields] if section else [name]
    missing = [k for k in keys if f"| `{k}` |" not in page]
    assert not missing, f"keys missing from docs/configuration.md: {missing}"


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


def test_the_code_cites_no_specification_outside_the_repository():
    outside = "science" + ".md"  # the spec docs/model.md replaced lives in ../shared/docs
    hits = [f"{p.relative_to(ROOT)}" for folder in ("src", "tests", "benchmarks", "configs", "tools")
            for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".yaml", ".c", ".h", ".sh"} and outside in p.read_text()]
    assert not hits, f"cite docs/model.md sections or the paper instead of {outside}: {hits}"
