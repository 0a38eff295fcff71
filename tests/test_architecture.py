"""The package's shape (issue #16): no import cycle between zoomin's modules, counting imports
inside functions too, and no module much over 400 lines."""
import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1] / "zoomin"


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def import_graph() -> nx.DiGraph:
    """Module -> the zoomin modules it imports (module-level or inside functions; ``from .x import
    y`` counts as importing ``x.y`` when that is a module, else ``x``)."""
    mods, g = modules(), nx.DiGraph()
    for m, p in mods.items():
        g.add_node(m)
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and t != "zoomin":  # the package itself is every module's parent
                    g.add_edge(m, t)
    return g


def test_the_graph_sees_real_imports():
    g = import_graph()
    assert g.has_edge("zoomin.model", "zoomin.sampling") and g.has_edge("zoomin.train", "zoomin.checkpoint")
    assert g.has_edge("zoomin.viz.explorer", "zoomin.viz.widgets")  # a function-level import counts
    assert g.number_of_nodes() == len(modules()) > 30


def test_no_import_cycle():
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_over_about_400_lines():
    long = {str(p.relative_to(ROOT.parent)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 420}
    assert not long, long
