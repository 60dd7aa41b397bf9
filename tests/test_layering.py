"""The packages' layering, read off the source: no module imports another that imports it back
(lazy imports inside functions count: they are circles that only show later), and the data
package `search_spaces` imports nothing of the library."""
import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "lut", "supernets", "search_spaces")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            out[".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = path
    return out


def _imported(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports anywhere but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:   # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        graph.add_edges_from((name, target) for target in _imported(path, name, modules))
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = _graph()
    assert len(graph) > 40 and graph.has_edge("nas.train", "nas.supernet_training")   # the graph is read
    assert [" -> ".join(cycle) for cycle in nx.simple_cycles(graph)] == []


def test_the_data_package_imports_nothing_of_the_library():
    graph = _graph()
    assert [t for s, t in graph.edges if s.startswith("search_spaces") and not t.startswith("search_spaces")] == []


def test_the_bottom_layer_imports_nothing_of_the_project():
    graph = _graph()
    assert graph.has_edge("supernets.config", "nas.core.io")   # the graph is read
    assert [(s, t) for s, t in graph.edges if s.startswith("nas.core") and not t.startswith("nas.core")] == []
    assert (ROOT / "nas" / "__init__.py").read_text().strip() == ""   # importing nas.core loads nothing else
