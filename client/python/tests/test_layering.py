"""Static checks of the package's structure, by parsing its source with ``ast`` (no server).

- The imports among glassbox modules form no cycle, counting every import: module-level,
  function-level and ``if TYPE_CHECKING:`` ones alike.
- No module imports or accesses a leading-underscore name that another glassbox module
  defines: what modules share has a public name inside its private module.
- No RPC is called by name: no ``getattr`` on anything but ``self``, and no string constant that
  is the name of an RPC of the proto.
- The transport has one method per RPC of the proto.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

from _helpers import REPO_ROOT

PACKAGE = "glassbox"
SOURCE = REPO_ROOT / "client" / "python" / "src" / PACKAGE
PROTO = REPO_ROOT / "proto" / "glassbox" / "v1" / "glassbox.proto"
GENERATED = "_proto"  # the generated package: not parsed, and its names are not ours


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@lru_cache(maxsize=None)
def modules() -> Dict[str, ast.Module]:
    """Every hand-written module of the package, by its name within it ("_model", "__init__")."""
    found = {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(SOURCE.glob("*.py"))}
    assert "_model" in found and "__init__" in found, f"no glassbox sources under {SOURCE}"
    return found


def _target(module: str, node: ast.ImportFrom) -> Optional[str]:
    """The dotted name, relative to the package, that ``from X import ...`` imports from; None
    outside the package. ``module`` is the importing module's name."""
    if node.level == 0:
        parts = (node.module or "").split(".")
        return ".".join(parts[1:]) if parts[0] == PACKAGE else None
    assert node.level == 1, f"{module}: an import above the package"
    return node.module or ""


def imports(module: str) -> Iterator[Tuple[str, Optional[str], int]]:
    """(imported glassbox module, imported name or None, line) for every import in ``module``.

    ``from . import _model`` yields ("_model", None); ``from ._types import indices`` yields
    ("_types", "indices"); ``import glassbox._model`` yields ("_model", None).
    """
    for node in ast.walk(modules()[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    yield parts[1], None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _target(module, node)
            if target is None:
                continue
            for alias in node.names:
                if not target:  # from . import X: X is a module of the package
                    yield alias.name, None, node.lineno
                else:
                    yield target.split(".")[0], (None if target.split(".")[0] == GENERATED else alias.name), node.lineno


def import_graph() -> Dict[str, Set[str]]:
    return {m: {target for target, _, _ in imports(m) if target != GENERATED} for m in modules()}


def _reachable(graph: Dict[str, Set[str]], start: str) -> Set[str]:
    seen: Set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cyclic_edges(graph: Dict[str, Set[str]]) -> List[str]:
    """Every import a -> b that lies on a cycle (a is reachable from b)."""
    return [f"{a} -> {b}" for a in sorted(graph) for b in sorted(graph[a]) if a in _reachable(graph, b) | {b}]


def private_definitions(module: str) -> Set[str]:
    """Leading-underscore names ``module`` defines: module-level and class-level functions,
    classes and variables, and attributes assigned on ``self``/``cls``."""
    names: Set[str] = set()
    for node in ast.walk(modules()[module]):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names.add(leaf.id)
                    elif isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) \
                            and leaf.value.id in ("self", "cls"):
                        names.add(leaf.attr)
    return {n for n in names if _is_private(n)}


def test_modules_are_found():
    assert {"__init__", "_client", "_model", "_types", "_errors"} <= set(modules())


def test_the_import_graph_is_acyclic():
    cyclic = cyclic_edges(import_graph())
    assert not cyclic, "imports on a cycle among glassbox modules: " + ", ".join(cyclic)


def test_no_dynamic_imports():
    for module, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                assert name not in ("import_module", "__import__"), f"{module}:{node.lineno}: a dynamic import"


def test_no_private_name_is_imported_from_another_module():
    bad = [f"{module}:{line}: imports {name} from {target}"
           for module in modules() for target, name, line in imports(module)
           if name is not None and _is_private(name)]
    assert not bad, "\n".join(bad)


def test_no_private_name_of_another_module_is_accessed():
    defined = {m: private_definitions(m) for m in modules()}
    bad = []
    for module, tree in modules().items():
        elsewhere = set().union(*(names for m, names in defined.items() if m != module)) - defined[module]
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in elsewhere:
                owners = sorted(m for m, names in defined.items() if node.attr in names)
                bad.append(f"{module}:{node.lineno}: .{node.attr} (defined in {', '.join(owners)})")
    assert not bad, "\n".join(sorted(bad))


@lru_cache(maxsize=None)
def rpc_names() -> Tuple[str, ...]:
    names = tuple(re.findall(r"^\s*rpc\s+(\w+)\s*\(", PROTO.read_text(), re.MULTILINE))
    assert "Run" in names and "ListModels" in names, f"no rpcs found in {PROTO}"
    return names


def test_no_rpc_is_called_by_name():
    rpcs = set(rpc_names())
    bad = []
    for module, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
                receiver = node.args[0] if node.args else None
                if not (isinstance(receiver, ast.Name) and receiver.id in ("self", "cls")):
                    bad.append(f"{module}:{node.lineno}: getattr on {ast.unparse(receiver) if receiver else '?'}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in rpcs:
                bad.append(f"{module}:{node.lineno}: the RPC name {node.value!r} as a string")
    assert not bad, "\n".join(sorted(bad))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_the_transport_has_one_method_per_rpc():
    from glassbox._transport import Transport

    missing = [f"{_snake(rpc)} (for {rpc})" for rpc in rpc_names()
               if not callable(getattr(Transport, _snake(rpc), None))]
    assert not missing, "Transport lacks " + ", ".join(missing)
