"""The import graph, read with ast: the layers of docs/architecture.md, no cycles (lazy imports included), a light top-level package."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "studentspec"

# bottom to top; a module may import only from its own layer and the layers below it.
# mlp and conv share a layer and never import each other.
LAYERS = [["ensemble"], ["config"], ["store"], ["images"], ["mlp", "conv"], ["theory"], ["pipelines"], ["sweep"], ["paper"], ["cli"]]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path, name: str, paths: dict[str, Path], module_level: bool) -> set[str]:
    """The studentspec modules `path` imports (at module level only, or anywhere, lazy imports in functions included)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level else list(ast.walk(tree))
    deps = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            targets = [".".join([*base, node.module])] if node.module else [".".join([*base, a.name]) for a in node.names]
            deps |= {t if t in paths else ".".join(base) for t in targets}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("studentspec"):
            deps.add(node.module if node.module in paths else node.module.rpartition(".")[0])
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names if a.name.startswith("studentspec")}
    return {d for d in deps if d in paths and d != name}


def graph(module_level: bool = True) -> dict[str, set[str]]:
    """studentspec module -> the studentspec modules it imports."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, name, paths, module_level) for name, path in paths.items()}


def layer(module: str) -> str | None:
    """The top-level part of a module ('mlp' for studentspec.mlp.train); None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_graph_is_read():
    g = graph()
    assert "studentspec.mlp.train" in g and "studentspec.config" in g["studentspec.mlp.train"]
    assert "studentspec.ensemble.activations.relu" in g and "studentspec.ensemble.activations" in g["studentspec.ensemble.activations.relu"]
    assert "studentspec.theory.lemma" in graph(module_level=False)["studentspec.theory.metric"]


def test_every_part_of_the_package_has_a_layer():
    parts = {layer(m) for m in graph()} - {None}
    assert parts == set(RANK), f"parts without a layer: {sorted(parts - set(RANK))}; layers without code: {sorted(set(RANK) - parts)}"


def test_no_module_imports_from_a_layer_above_it_even_lazily():
    bad = []
    for name, deps in graph(module_level=False).items():
        mine = layer(name)
        for d in deps:
            theirs = layer(d)
            if mine is None or theirs is None or mine == theirs:
                continue
            if RANK[theirs] > RANK[mine] or (RANK[theirs] == RANK[mine]):
                bad.append(f"{name} -> {d}")
    assert not bad, "imports against the layers: " + "; ".join(sorted(bad))


def test_the_top_level_package_imports_nothing_eagerly():
    assert graph()["studentspec"] == set()  # the public API is loaded on first use (PEP 562 __getattr__)


def test_no_import_cycles_even_lazily():
    """No cycle in the whole graph, imports inside functions included (a lazy cycle is still two modules that need each other)."""
    g = graph(module_level=False)
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


def test_the_checks_catch_a_violation(tmp_path, monkeypatch):
    """The layer rule fails when a lower layer imports a higher one (a copy of the package with one bad import)."""
    import shutil

    copy = tmp_path / "src" / "studentspec"
    shutil.copytree(PACKAGE, copy)
    target = copy / "ensemble" / "seeding.py"
    target.write_text(target.read_text() + "\n\ndef _bad():\n    from ..mlp import train  # noqa\n")
    monkeypatch.setitem(globals(), "PACKAGE", copy)
    try:
        test_no_module_imports_from_a_layer_above_it_even_lazily()
    except AssertionError as err:
        assert "studentspec.ensemble.seeding -> studentspec.mlp" in str(err)
    else:
        raise AssertionError("an ensemble module importing mlp passed the layer check")


def test_the_cycle_check_reads_lazy_imports(tmp_path, monkeypatch):
    """The cycle check fails on a cycle closed by an import inside a function (a copy of the package with one such import)."""
    import shutil

    copy = tmp_path / "src" / "studentspec"
    shutil.copytree(PACKAGE, copy)
    target = copy / "paper" / "style.py"  # report reaches style (report -> figures -> style): style -> report closes a cycle
    target.write_text(target.read_text() + "\n\ndef _bad():\n    from .report import write_report  # noqa\n")
    monkeypatch.setitem(globals(), "PACKAGE", copy)
    assert "studentspec.paper.report" not in graph()["studentspec.paper.style"]  # invisible at module level
    try:
        test_no_import_cycles_even_lazily()
    except AssertionError as err:
        assert "import cycle" in str(err) and "studentspec.paper.style" in str(err)
    else:
        raise AssertionError("a cycle through a lazy import passed the cycle check")
