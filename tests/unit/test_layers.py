"""The house keeps its shape: imports run one way, as DESIGN.md and README draw it, with no circles.

    cli -> daemon -> web -> intake, jobs -> pipeline -> outbound, sla -> config -> rules -> vocabulary
                                                       `-> storage -> vocabulary

Every ``import`` of ``mailgate/`` is read with ``ast`` (including the ones inside functions and under
``TYPE_CHECKING``: a circle that only type checking sees is still one a reader has to untangle).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mailgate"
VOCABULARY = "vocabulary"  # the top-level modules every package may use

# what each layer may import besides itself (the layers below it)
BELOW: dict[str, set[str]] = {
    VOCABULARY: set(),
    "rules": {VOCABULARY},
    "storage": {VOCABULARY},
    "config": {VOCABULARY, "rules"},
    "sla": {VOCABULARY, "rules", "config", "storage"},
    "outbound": {VOCABULARY, "rules", "config", "storage"},
    "pipeline": {VOCABULARY, "rules", "config", "storage", "sla", "outbound"},
    "jobs": {VOCABULARY, "rules", "config", "storage", "sla", "outbound", "pipeline"},
    "intake": {VOCABULARY, "rules", "config", "storage", "sla", "outbound", "pipeline"},
    "web": {VOCABULARY, "rules", "config", "storage", "sla", "outbound", "pipeline", "intake"},
    "daemon": {VOCABULARY, "rules", "config", "storage", "sla", "outbound", "pipeline", "jobs", "intake", "web"},
    "cli": {VOCABULARY, "rules", "config", "storage", "sla", "outbound", "pipeline", "jobs", "intake", "web",
            "daemon"},
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "cli" if module == "mailgate.__main__" else VOCABULARY


def _imports() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mailgate"):
                # "from mailgate.x import y": y may be a module of package x
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("mailgate")]
            graph[name].update(t for t in targets if t in modules and t != name)
    for name in modules:
        graph.setdefault(name, set())
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_package_is_a_known_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert packages == set(BELOW) - {VOCABULARY}, "a new package needs its place in BELOW (and in DESIGN.md)"


def test_no_module_imports_a_layer_above_it() -> None:
    upward = []
    for module, targets in _imports().items():
        mine = _layer(module)
        for target in sorted(targets):
            theirs = _layer(target)
            if theirs != mine and theirs not in BELOW[mine]:
                upward.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert upward == []


def test_no_circles_between_modules() -> None:
    assert _cycles(_imports()) == []


def test_no_circles_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in _imports().items():
        graph[_layer(module)].update(_layer(t) for t in targets if _layer(t) != _layer(module))
    assert _cycles(dict(graph)) == []


def test_the_checker_sees_a_circle_and_an_upward_import() -> None:
    """The checks above can fail: a made-up circle and a made-up upward edge are caught."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _layer("mailgate.storage.store") == "storage" and "daemon" not in BELOW["pipeline"]
