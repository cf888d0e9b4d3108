"""The tree reads from the door: no module imports one that imports it back, and the layers
point one way (`service` → `actors` → `protocol`); modules and functions stay small enough to
read (STYLE.md: split near 400 lines); and the caller's identity is read one way
(`Caller.of(connection)`), never from the scope's state by hand.

Read from the source (the AST), not from `sys.modules`, so an import inside a function or under
`if TYPE_CHECKING:` counts the same as one at the top: a local import only hides a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "actors", "service", "bench")
PRODUCT = ("protocol", "actors", "service")  # what ships as the server (the bench is a tool)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# The one module that reads and writes the caller in the connection's scope.
CALLER_MODULE = "service/policy/caller.py"

# Which top-level packages each package may not import (anything else of ours is allowed).
FORBIDDEN = {
    "protocol": {"actors", "service", "bench"},
    "actors": {"service", "bench"},
    "service": {"bench"},
}
# STYLE.md: `protocol/` is sans-IO and never imports trio; only `service/` imports Starlette.
FORBIDDEN_LIBRARIES = {
    "protocol": {"trio", "starlette"},
    "actors": {"starlette"},
    "bench": {"starlette"},
}

Graph = dict[str, set[str]]


def module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name `module` imports, anywhere in its source (relative imports resolved);
    `from a import b` yields both `a.b` and `a`, since `b` may be a module or a name."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)


def import_graph() -> tuple[Graph, Graph]:
    """(edges between our modules, the third-party top-level names each module imports)."""
    files = module_files()
    ours: Graph = {}
    theirs: Graph = {}
    for module, path in files.items():
        ours[module], theirs[module] = set(), set()
        for name in imported_names(module, path):
            if name.split(".")[0] not in PACKAGES:
                theirs[module].add(name.split(".")[0])
                continue
            target = name
            while target and target not in files:  # `a.b.Name` → module `a.b`
                target = target.rpartition(".")[0]
            if target and target != module:
                ours[module].add(target)
    return ours, theirs


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_circles() -> None:
    ours, _ = import_graph()
    circles = [
        [f"{module} -> {sorted(ours[module] & set(component))}" for module in component]
        for component in cycles(ours)
    ]
    assert circles == []


def test_the_layers_point_one_way() -> None:
    ours, theirs = import_graph()
    wrong = [
        f"{module} imports {target}"
        for module, targets in sorted(ours.items())
        for target in sorted(targets)
        if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], set())
    ]
    wrong += [
        f"{module} imports {library}"
        for module, libraries in sorted(theirs.items())
        for library in sorted(libraries)
        if library in FORBIDDEN_LIBRARIES.get(module.split(".")[0], set())
    ]
    assert wrong == []


def test_only_the_model_package_imports_the_model_libraries() -> None:
    """faster-whisper and CTranslate2 are `actors/model/`'s business (the bench's offline
    reference and the WhisperLive peer run them on their own)."""
    _, theirs = import_graph()
    wrong = [
        f"{module} imports {library}"
        for module, libraries in sorted(theirs.items())
        for library in sorted(libraries & {"faster_whisper", "ctranslate2"})
        if not module.startswith(("actors.model.", "bench."))
    ]
    assert wrong == []


def test_the_checks_see_local_imports_and_circles() -> None:
    """The checks themselves: a function-level import is an edge, and a circle is found."""
    _, theirs = import_graph()
    assert "textblob" in theirs["actors.model.sentiment"]  # imported inside a function
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def product_files() -> dict[str, Path]:
    """Our shipped modules by their path from the root (`service/app.py`)."""
    return {
        path.relative_to(ROOT).as_posix(): path
        for package in PRODUCT
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, line, length) of each function longer than `limit` lines, from its `def` to its
    last line (decorators not counted, its docstring counted)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


_STATE_READERS = frozenset({"request", "websocket", "connection"})


def state_reads(source: str) -> list[int]:
    """Lines that reach into a connection's scope state by hand: `scope["state"]`,
    `scope.get("state")` (or `setdefault`, `pop`), and Starlette's `request.state` (a view of
    the same dict)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript):
            key = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "setdefault", "pop")
            and node.args
        ):
            key = node.args[0]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "state"
            and isinstance(node.value, ast.Name)
            and node.value.id in _STATE_READERS
        ):
            lines.append(node.lineno)
            continue
        else:
            continue
        if isinstance(key, ast.Constant) and key.value == "state":
            lines.append(node.lineno)
    return sorted(lines)


def test_no_product_module_is_over_400_lines() -> None:
    long = {
        name: count
        for name, path in product_files().items()
        if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_product_function_is_over_60_lines() -> None:
    long = [
        f"{name}:{line} {function} ({length} lines)"
        for name, path in product_files().items()
        for function, line, length in long_functions(path.read_text())
    ]
    assert long == []


def test_only_the_caller_module_reads_the_scope_state() -> None:
    reads = [
        f"{name}:{line}"
        for name, path in product_files().items()
        if name != CALLER_MODULE
        for line in state_reads(path.read_text())
    ]
    assert reads == []


def test_the_size_and_state_checks_see_what_they_look_for() -> None:
    long = "def f():\n" + "    x = 1\n" * 60 + "\n\nasync def g():\n    pass\n"
    assert long_functions(long) == [("f", 1, 61)]
    source = (
        'a = scope["state"]\n'
        'b = websocket.scope.get("state", {})\n'
        "c = request.state.client\n"
        'd = scope.setdefault("state", {})\n'
        "e = app.state.chorus\n"  # the app's own state, not a connection's
        'f = frame["type"]\n'
    )
    assert state_reads(source) == [1, 2, 3, 4]
    assert state_reads((ROOT / CALLER_MODULE).read_text()) != []  # it is the one that does


# The session's stages (`service/session/`): each the task of one stage of `run_session`'s
# nursery, or a worker of one (the transcriber client's drafts worker). They hand each other
# only channel items (`messages.py`) and stand on shared helpers (`ports`, `config`, `state`,
# `agreement`), never on one another: a stage reads on its own.
STAGES = {
    f"service.session.{name}"
    for name in ("reader", "segmenting", "transcribing", "drafting", "writer")
}
# a stage's own workers, started in its own nursery (the one edge between stage modules)
WORKERS = {"service.session.transcribing": {"service.session.drafting"}}


def test_the_session_stages_do_not_import_each_other() -> None:
    ours, _ = import_graph()
    assert set(ours) >= STAGES
    wrong = [
        f"{module} imports {target}"
        for module in sorted(STAGES)
        for target in sorted(ours[module] & STAGES - WORKERS.get(module, set()))
    ]
    helpers = {m for m in ours if m.startswith("service.session.")} - STAGES
    supervisors = {"service.session.supervisor", "service.session.admission"}
    wrong += [
        f"helper {module} imports stage {target}"
        for module in sorted(helpers - supervisors)
        for target in sorted(ours[module] & STAGES)
    ]
    assert wrong == []
