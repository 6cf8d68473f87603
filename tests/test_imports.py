"""The layers hold and no import cycle exists among the production modules, counting the imports inside
functions (where cycles hide) and leaving out `if TYPE_CHECKING:` blocks (never run). Modules the
registries import by name at run time (importlib) are entries that import the registry, not the other
way round. The layer order is docs/design.md's ("Layers")."""

import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("driver", "tuning", "search_spaces", "analysis", "trainables", "experiment")
SCRIPTS = ("run_search",)
# Top to bottom: a module imports its own layer and those below it, never one above.
LAYERS = ("run_search", "driver", "tuning", "search_spaces", "analysis", "trainables", "experiment")
# Upward imports being removed elsewhere, as (importer, imported) modules; must stay empty.
ALLOWED_UPWARD: list[tuple[str, str]] = []
# Cycles being removed elsewhere; each entry must still be a cycle, so the list empties as they go.
KNOWN_CYCLES: list[set[str]] = []  # none: keep it that way


def project_modules() -> dict[str, Path]:
    modules = {name: PROJECT / f"{name}.py" for name in SCRIPTS}
    for package in PACKAGES:
        for path in (PROJECT / package).rglob("*.py"):
            parts = path.relative_to(PROJECT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


def cycles() -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    modules = project_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            connect(v)
    return found


def test_no_import_cycle():
    found = cycles()
    unexpected = [c for c in found if c not in KNOWN_CYCLES]
    assert not unexpected, f"import cycles: {unexpected}"
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"{gone} is no longer a cycle: remove it from KNOWN_CYCLES"


def test_the_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg.a import x\n")
    modules = {
        "pkg": tmp_path / "pkg" / "__init__.py",
        "pkg.a": tmp_path / "pkg" / "a.py",
        "pkg.b": tmp_path / "pkg" / "b.py",
    }
    assert imports_of("pkg.a", modules["pkg.a"], modules) == {"pkg.b"}
    assert imports_of("pkg.b", modules["pkg.b"], modules) == {"pkg.a"}


def layer_of(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def upward_imports() -> list[tuple[str, str]]:
    modules = project_modules()
    return sorted(
        (name, target)
        for name, path in modules.items()
        for target in imports_of(name, path, modules)
        if layer_of(target) < layer_of(name)
    )


def test_no_layer_imports_a_higher_one():
    found = upward_imports()
    unexpected = [pair for pair in found if pair not in ALLOWED_UPWARD]
    assert not unexpected, f"imports of a higher layer ({' > '.join(LAYERS)}): {unexpected}"
    assert not ALLOWED_UPWARD, "the allow-list is for a move in progress; empty it"


def test_every_production_module_is_in_a_layer():
    assert {m.split(".")[0] for m in project_modules()} == set(LAYERS)


def test_the_layer_check_sees_an_upward_import_inside_a_function(tmp_path):
    (tmp_path / "trainables").mkdir()
    (tmp_path / "trainables" / "x.py").write_text("def f():\n    from driver import run\n")
    modules = {"trainables.x": tmp_path / "trainables" / "x.py", "driver": tmp_path / "driver.py"}
    (tmp_path / "driver.py").write_text("")
    targets = imports_of("trainables.x", modules["trainables.x"], modules)
    assert targets == {"driver"} and layer_of("driver") < layer_of("trainables.x")


def test_nothing_below_the_command_lines_takes_an_argparse_namespace():
    """run_search.py turns flags into a driver.request.Request; `python -m analysis` (report.py,
    compare.py) parses its own flags and hands plain values on. No other module touches argparse."""
    command_lines = {"run_search", "analysis.report", "analysis.compare"}
    users = sorted(
        name for name, path in project_modules().items() if name not in command_lines and "argparse" in path.read_text()
    )
    assert not users, f"argparse below the command line: {users}"


def test_no_test_module_imports_from_another():
    """Shared test helpers live in helper modules (tests/search_runs.py, tests/fresh_python.py, ...) or
    conftest, so a test module can be run, moved or deleted alone."""
    offenders = []
    for path in (PROJECT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(n.split(".")[-1].startswith("test_") for n in names):
                offenders.append(f"{path.relative_to(PROJECT)} imports {names}")
    assert not offenders, offenders
