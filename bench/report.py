"""docs/benchmarks.md from a bench run's results: the machine, then one table per
benchmark (nested figures flattened to dotted names), and the charts benchmarks drew."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HEADER = """# Benchmarks

Written by `make bench` (`bench/run.py`) from `bench/results/latest.json`. Every benchmark
runs its baseline side by side in the same run and reports ratios; the tests never assert
times. Figures depend on the machine and on what else runs on it.

"""


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for key, inner in value.items():
            rows += _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        rows = []
        for number, inner in enumerate(value):
            label = inner.get("guests", number) if isinstance(inner, dict) else number
            rows += _flatten(inner, f"{prefix}[{label}]")
        return rows
    return [(prefix, value)]


def render(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    lines = [HEADER, f"Run started {results.get('started', '?')} on {machine.get('platform')}, "
             f"Python {machine.get('python')}, {machine.get('cpus')} CPUs.\n"]
    for name, figures in results.get("benchmarks", {}).items():
        lines.append(f"\n## {name}\n")
        chart = figures.get("chart") if isinstance(figures, dict) else None
        if chart:
            lines.append(f"![{name}]({Path(chart).name})\n")
        lines.append("| figure | value |\n|---|---|")
        for key, value in _flatten(figures):
            if key != "chart":
                lines.append(f"| `{key}` | {value} |")
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], docs: Path) -> Path:
    docs.mkdir(exist_ok=True)
    out = docs / "benchmarks.md"
    out.write_text(render(results))
    return out
