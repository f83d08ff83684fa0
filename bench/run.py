#!/usr/bin/env python
"""Runs every benchmark under bench/ (modules named bench_*.py, each with `run() -> dict`)
and writes bench/results/latest.json. Benchmarks run their baseline side by side in the
same run and report ratios; nothing here asserts a time."""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
os.environ.setdefault("XENWEB_DATA_DIR", str(BENCH.parent / "var" / "bench"))
os.environ.setdefault("XENWEB_REDIS_DB_BASE", "13")
os.environ.setdefault("XENWEB_QUEUE", "xenweb-bench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")


def main() -> int:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    selected = sys.argv[1:]
    results = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "benchmarks": {},
    }
    for path in sorted(BENCH.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if selected and name not in selected:
            continue
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"bench.{path.stem}")
        results["benchmarks"][name] = module.run()
    out = BENCH / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {out.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
