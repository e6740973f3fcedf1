"""The import graph (module-level imports, read with ast): no cycles, and the base layer imports nothing above it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "studentspec"
# the base layer: what every pipeline builds on; it may import only within itself
BASE = {"studentspec.config", "studentspec.ensemble.atomic", "studentspec.ensemble.seeding", "studentspec.ensemble.losses",
        "studentspec.ensemble.activations", "studentspec.ensemble"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def graph() -> dict[str, set[str]]:
    """studentspec module -> the studentspec modules it imports at module level (imports inside functions are lazy)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                targets = [".".join([*base, node.module])] if node.module else [".".join([*base, a.name]) for a in node.names]
                deps |= {t if t in paths else ".".join(base) for t in targets}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("studentspec")}
        edges[name] = {d for d in deps if d in paths and d != name}
    return edges


def test_the_graph_is_read():
    g = graph()
    assert "studentspec.mlp.train" in g and "studentspec.config" in g["studentspec.mlp.train"]
    assert "studentspec.ensemble.activations.relu" in g and "studentspec.ensemble.activations" in g["studentspec.ensemble.activations.relu"]


def test_no_import_cycles_at_module_level():
    g = graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for d in sorted(g[n]):
            if state.get(d) == 1 and not (d.startswith(n) or n.startswith(d + ".")):  # a package and its own modules
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(d):], d]))
            if d not in state:
                visit(d, [*path, d])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [n])


def test_the_base_layer_imports_nothing_above_it():
    g = graph()
    for name, deps in g.items():
        if name in BASE or name.startswith("studentspec.ensemble.activations."):
            above = {d for d in deps if d not in BASE and not d.startswith("studentspec.ensemble.activations")}
            assert not above, f"{name} imports {sorted(above)} from above the base layer"
