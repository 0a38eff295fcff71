"""The fast tier (``pytest -m "not slow and not notebook and not browser" tests``) reaches every
module of the package: each module under ``zoomin/`` is imported by a test that is not marked
``slow``, ``notebook`` or ``browser``, directly or through what the modules it imports import
(lazy imports inside functions included, except the command line's, which imports every
command). Read from the sources with ``ast``: the check takes under a second."""
import ast
import functools
import pkgutil
from pathlib import Path

import zoomin

TESTS = Path(__file__).parent
PACKAGE = Path(zoomin.__file__).parent
TIERS = {"slow", "notebook", "browser"}
DISPATCH = {"zoomin.cli", "zoomin.__main__"}


@functools.cache
def modules() -> tuple[str, ...]:
    return ("zoomin", *sorted(m.name for m in pkgutil.walk_packages(zoomin.__path__, "zoomin.")))


def source(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    return PACKAGE / rel / "__init__.py" if (PACKAGE / rel).is_dir() else (PACKAGE / rel).with_suffix(".py")


def absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name ``from ... import`` refers to, inside ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


@functools.cache
def package_exports(package: str) -> dict[str, str]:
    """Names a package hands out -> the submodule they live in: its ``from .x import name`` lines and
    lazy tables of the form ``{"name": "submodule"}`` (``zoomin.viz``)."""
    known, out = set(modules()), {}
    for node in ast.walk(ast.parse(source(package).read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            target = absolute(node, package, True)
            out.update({a.asname or a.name: target for a in node.names if target in known})
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant) and f"{package}.{v.value}" in known:
                    out[k.value] = f"{package}.{v.value}"
    return out


def imported(nodes, here: str = "", is_package: bool = False) -> set[str]:
    """zoomin modules named by the import statements (and ``python -m zoomin`` argument lists) in ``nodes``."""
    known, found = set(modules()), set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            mod = absolute(node, here, is_package)
            if mod not in known:
                continue
            if node.module:  # ``from . import x`` names x, not the package
                found.add(mod)
            exports = package_exports(mod) if source(mod).name == "__init__.py" else {}
            for a in node.names:
                sub = f"{mod}.{a.name}"
                found |= {sub} if sub in known else ({exports[a.name]} if a.name in exports else set())
        elif isinstance(node, (ast.List, ast.Tuple)):
            args = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            found |= {f"{args[i + 1]}.__main__" for i in range(len(args) - 1)
                      if args[i] == "-m" and f"{args[i + 1]}.__main__" in known}
    return found


def tier_marks(decorators) -> set[str]:
    """Tier markers among decorators or a ``pytestmark`` value (``pytest.mark.slow``, lists of them).
    A parametrisation marked ``slow`` marks its whole test here: the check errs on the strict side."""
    return {n.attr for d in decorators for n in ast.walk(d) if isinstance(n, ast.Attribute) and n.attr in TIERS}


def fast_imports(path: Path) -> set[str]:
    """zoomin modules imported where a fast test runs them: at module level or in helpers when the
    file has a fast test, and inside the fast tests themselves (not inside marked ones)."""
    tree = ast.parse(path.read_text())
    file_marks = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            file_marks |= tier_marks([node.value])
    tests = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    marked_classes = [c for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and tier_marks(c.decorator_list)]
    in_marked_class = {id(n) for c in marked_classes for n in ast.walk(c)}
    fast = [t for t in tests if not tier_marks(t.decorator_list) and id(t) not in in_marked_class]
    if file_marks or (tests and not fast):
        return set()
    slow_nodes = {id(n) for t in tests if t not in fast for n in ast.walk(t)}
    nodes = [n for n in ast.walk(tree) if id(n) not in slow_nodes]
    found = imported(nodes)
    helpers = {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
    helpers |= {n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    for h in helpers:  # the tests' own helper modules (hostile.py, train_hooks.py, ...)
        if (TESTS / f"{h}.py").is_file():
            found |= imported(ast.walk(ast.parse((TESTS / f"{h}.py").read_text())))
    return found


@functools.cache
def internal_imports(module: str) -> frozenset[str]:
    """What ``module`` imports, lazy (function-level) imports included, except for the command line,
    which imports every command lazily: reaching it does not run them."""
    tree = ast.parse(source(module).read_text())
    nodes = tree.body if module in DISPATCH else ast.walk(tree)
    return frozenset(imported(nodes, module, source(module).name == "__init__.py"))


def reached_by_fast_tests() -> dict[str, set[str]]:
    """Module -> fast test files that reach it."""
    reach: dict[str, set[str]] = {}
    for path in sorted(TESTS.glob("test_*.py")):
        todo, seen = list(fast_imports(path)), set()
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += internal_imports(m)
        for m in seen:
            reach.setdefault(m, set()).add(path.name)
    return reach


def test_every_module_is_reached_by_the_fast_tier():
    reach = reached_by_fast_tests()
    missing = [m for m in modules() if m not in reach]
    assert not missing, f"no fast test imports {', '.join(missing)}"


def test_the_check_sees_tier_markers_and_lazy_exports():
    """Its parts on known cases: the browser test file is not fast, ``zoomin.viz``'s lazy table
    resolves, ``python -m zoomin`` counts as ``zoomin.__main__``, relative imports resolve."""
    assert fast_imports(TESTS / "test_lab.py") == set()  # pytestmark = [browser, notebook, slow]
    assert package_exports("zoomin.viz")["Explorer"] == "zoomin.viz.explorer"
    assert package_exports("zoomin")["ZoomInNet"] == "zoomin.model"
    assert "zoomin.__main__" in fast_imports(TESTS / "test_train_cli.py")
    assert internal_imports("zoomin.__main__") == {"zoomin.cli"}
    assert "zoomin.train" not in internal_imports("zoomin.cli")  # commands are not followed
    assert {"zoomin.trace", "zoomin.sampling", "zoomin.geometry"} <= internal_imports("zoomin.model")
    assert "zoomin" not in internal_imports("zoomin.sampling")  # ``from . import foreground``
