"""The import rules of docs/architecture.md, read from that document and checked on the source.

The document holds two machine-read blocks: ```layers``` (top to bottom, one layer per line:
a name, then its packages; packages joined by ``|`` are independent of each other) and
```debts``` (known wrong arrows, ``importer -> imported  why``). Keeping the rules in the
document means the map and the check cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "architecture.md"
# Shipped with the product; lab/ is checked for the libvirt rule only (it is not imported by
# the product either). tests/ and bench/ may import anything.
NOT_PRODUCT = ("lab",)


@dataclass(frozen=True)
class Layer:
    name: str
    rank: int  # 0 is the top
    groups: tuple[tuple[str, ...], ...]  # independent groups of packages


@dataclass
class Rules:
    layers: list[Layer]
    debts: dict[tuple[str, str], str] = field(default_factory=dict)

    def packages(self) -> dict[str, tuple[Layer, int]]:
        """Every package named in the layers: its layer and its independent group."""
        return {package: (layer, index)
                for layer in self.layers
                for index, group in enumerate(layer.groups)
                for package in group}


def _block(text: str, kind: str) -> list[str]:
    match = re.search(rf"```{kind}\n(.*?)```", text, re.S)
    if not match:
        raise ValueError(f"docs/architecture.md has no ```{kind} block")
    return [line for line in match.group(1).splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def read_rules(text: str) -> Rules:
    layers = []
    for rank, line in enumerate(_block(text, "layers")):
        name, _, rest = line.partition(" ")
        groups = tuple(tuple(group.split()) for group in rest.split("|"))
        layers.append(Layer(name, rank, groups))
    debts = {}
    for line in _block(text, "debts"):
        arrow, _, why = line.partition("  ")
        importer, _, imported = arrow.partition(" -> ")
        debts[(importer.strip(), imported.strip())] = why.strip()
    return Rules(layers, debts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str) -> Iterator[str]:
    """Absolute imports anywhere in the module, lazy ones inside functions included.

    ``from a.b import c`` gives ``a.b.c``: c may be a module or a name in a.b; resolve()
    tells which.
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def resolve(name: str, modules: set[str]) -> str | None:
    """The module an imported name lives in: the name itself or its longest parent module."""
    parts = name.split(".")
    while parts:
        if (candidate := ".".join(parts)) in modules:
            return candidate
        parts.pop()
    return None


def source_files(top_packages: Iterable[str]) -> Iterator[Path]:
    for top in top_packages:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def import_graph(top_packages: Iterable[str]) -> dict[str, set[str]]:
    return {module_name(path): set(imported_names(path.read_text()))
            for path in source_files(top_packages)}


def owner(module: str, packages: Iterable[str]) -> str | None:
    """The longest listed package that contains the module."""
    best = None
    for package in packages:
        if module == package or module.startswith(package + "."):
            if best is None or len(package) > len(best):
                best = package
    return best


def layer_violations(graph: dict[str, set[str]], rules: Rules) -> set[tuple[str, str]]:
    """(importing module, imported package) for every arrow up or across independent groups."""
    packages = rules.packages()
    wrong = set()
    for module, names in graph.items():
        source = owner(module, packages)
        if source is None:
            continue
        for name in names:
            target = owner(name, packages)
            if target is None or target == source:
                continue
            (source_layer, source_group), (target_layer, target_group) = (
                packages[source], packages[target])
            upward = target_layer.rank < source_layer.rank
            across = target_layer is source_layer and target_group != source_group
            if upward or across:
                wrong.add((module, target))
    return wrong


def without_debts(graph: dict[str, set[str]], rules: Rules) -> dict[str, set[str]]:
    """The graph minus the listed debts' arrows (a debt's circle is the same debt)."""
    packages = rules.packages()
    return {module: {name for name in names
                     if (module, owner(name, packages)) not in rules.debts}
            for module, names in graph.items()}


def concern(module: str, packages: Iterable[str]) -> str:
    """A module's concern: its listed package, or its subpackage one level below that."""
    package = owner(module, packages) or module.split(".")[0]
    rest = module[len(package):].lstrip(".").split(".")
    return f"{package}.{rest[0]}" if len(rest) > 1 else package


def concern_cycles(graph: dict[str, set[str]], packages: Iterable[str]) -> list[set[str]]:
    """Groups of concerns that import each other in a circle (strongly connected, size > 1)."""
    packages = list(packages)
    modules = set(graph)
    edges: dict[str, set[str]] = {}
    for module, names in graph.items():
        here = concern(module, packages)
        edges.setdefault(here, set())
        for name in names:
            target = resolve(name, modules)
            if target and (there := concern(target, packages)) != here:
                edges[here].add(there)
    return [component for component in _strongly_connected(edges) if len(component) > 1]


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            found.append(component)

    for node in list(edges):
        if node not in index:
            visit(node)
    return found
