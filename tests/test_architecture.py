"""docs/architecture.md's layers hold in the source: no arrow up, no arrow between independent
packages of one layer, no circle between concerns, libvirt only in the adapter, and the product
never imports the lab, the tests or the benchmarks."""

from __future__ import annotations

import tomllib

import pytest

from tests.architecture import (
    DOCUMENT,
    NOT_PRODUCT,
    ROOT,
    Rules,
    concern_cycles,
    import_graph,
    layer_violations,
    owner,
    read_rules,
    without_debts,
)


@pytest.fixture(scope="module")
def rules() -> Rules:
    return read_rules(DOCUMENT.read_text())


def product_packages() -> list[str]:
    """The top-level packages the wheel ships (pyproject's setuptools include list)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return [pattern.rstrip("*") for pattern in patterns]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(product_packages())


def test_every_shipped_package_has_a_layer(rules: Rules) -> None:
    packages = rules.packages()
    assert [top for top in product_packages() if owner(top, packages) is None] == []
    assert not set(NOT_PRODUCT) & set(product_packages()), "the lab is not shipped"


def test_no_arrow_goes_up_or_across_except_the_listed_debts(
        rules: Rules, graph: dict[str, set[str]]) -> None:
    found = layer_violations(graph, rules)
    unlisted = sorted(found - set(rules.debts))
    paid = sorted(set(rules.debts) - found)
    assert unlisted == [], (
        "imports against docs/architecture.md's layers (move the code down, or invert the "
        f"call): {unlisted}")
    assert paid == [], f"fixed: delete these from the debts block of docs/architecture.md: {paid}"


def test_no_import_circle_between_concerns(rules: Rules, graph: dict[str, set[str]]) -> None:
    assert concern_cycles(without_debts(graph, rules), rules.packages()) == []


def test_libvirt_is_imported_only_by_the_adapter() -> None:
    graph = import_graph([*product_packages(), *NOT_PRODUCT])
    importers = sorted(module for module, names in graph.items()
                       if any(name == "libvirt" or name.startswith("libvirt.") for name in names)
                       and not module.startswith("hosts.virt"))
    assert importers == []


def test_the_product_imports_no_lab_test_or_benchmark(graph: dict[str, set[str]]) -> None:
    outside = (*NOT_PRODUCT, "tests", "bench")
    wrong = sorted((module, name) for module, names in graph.items() for name in names
                   if name.split(".")[0] in outside)
    assert wrong == []


# The checker itself, on made-up modules: it must see what it is meant to see.
SAMPLE = """
```layers
top     app
middle  left | right
base    core
```
```debts
left.x -> app  a known one
```
"""


def test_the_checker_finds_upward_and_sideways_arrows() -> None:
    rules = read_rules(SAMPLE)
    graph = {
        "app.views": {"left.x", "core.y"},
        "left.x": {"core.y", "app.views", "right.z.f"},
        "right.z": {"core.y"},
        "core.y": {"os.path"},
    }
    assert layer_violations(graph, rules) == {("left.x", "app"), ("left.x", "right")}
    assert rules.debts == {("left.x", "app"): "a known one"}


def test_the_checker_finds_circles_between_concerns() -> None:
    rules = read_rules(SAMPLE)
    graph = {
        "core.jobs.models": {"core.audit.log.write"},
        "core.audit.log": {"core.jobs.models.Job"},
        "core.jobs.api": {"core.jobs.models.Job"},
        "left.a": {"left.b.f"},
        "left.b": {"left.a.g"},
    }
    # left.a <-> left.b are modules of one concern (left); the jobs/audit circle crosses two.
    assert concern_cycles(graph, rules.packages()) == [{"core.jobs", "core.audit"}]
