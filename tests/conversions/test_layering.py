"""Structural: conversions sits above guests and storage. Nothing in storage, guests, hosts
or the project's core imports it; only the root URL and API wiring does."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BASE = Path(__file__).resolve().parents[2]
BELOW = ("storage", "guests", "hosts", "xenweb")
ROOT_WIRING = {"xenweb/urls.py", "xenweb/api_urls.py", "xenweb/routing.py", "xenweb/asgi.py",
               "xenweb/views.py"}


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", BELOW)
def test_nothing_below_conversions_imports_it(package: str) -> None:
    offenders = []
    for path in sorted((BASE / package).rglob("*.py")):
        relative = path.relative_to(BASE).as_posix()
        if relative in ROOT_WIRING:
            continue
        imported = _imported(ast.parse(path.read_text(), relative))
        if any(name == "conversions" or name.startswith("conversions.") for name in imported):
            offenders.append(relative)
    assert offenders == []
