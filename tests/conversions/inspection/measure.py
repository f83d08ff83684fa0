"""An inspection run in a fresh interpreter, measured: what it ended with, the CPU time and
peak resident set of its readers (getrusage(RUSAGE_CHILDREN): debugfs, mtools and qemu-img,
each the process prlimit became) and of the inspecting process itself.

A child's peak counts the memory of the process it was forked from, so the readers are
measured from this small interpreter, never from the test process, and the interpreter's
own peak is read from /proc (VmHWM), not getrusage.

    python -m tests.conversions.inspection.measure IMAGE FORMAT [READER_CPU_SECONDS]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Measured:
    error: str  # the exception's class name, "" when the inspection succeeded
    message: str
    readers_cpu_seconds: float
    readers_peak_bytes: int
    inspector_peak_bytes: int


def inspect_measured(image: Path, fmt: str, *, cpu_seconds: int | None = None) -> Measured:
    """`inspect_image(image, fmt)` in a child interpreter; `cpu_seconds` replaces the
    readers' CPU limit (run.READER_CPU_SECONDS) there."""
    argv = [sys.executable, "-m", "tests.conversions.inspection.measure", str(image), fmt]
    argv += [str(cpu_seconds)] if cpu_seconds else []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT,
                          check=True, timeout=900)
    return Measured(**json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str]) -> None:
    from conversions.inspection import InspectionError, inspect_image, run

    if len(argv) > 2:
        run.READER_CPU_SECONDS = int(argv[2])
    error = message = ""
    try:
        inspect_image(argv[0], argv[1])
    except InspectionError as exc:
        error, message = type(exc).__name__, str(exc)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"error": error, "message": message,
                      "readers_cpu_seconds": children.ru_utime + children.ru_stime,
                      "readers_peak_bytes": children.ru_maxrss * 1024,
                      "inspector_peak_bytes": _own_peak()}))


def _own_peak() -> int:
    """This process's peak resident set since its exec (VmHWM): getrusage(RUSAGE_SELF)
    would count the parent's, as a child's peak does."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    main(sys.argv[1:])
