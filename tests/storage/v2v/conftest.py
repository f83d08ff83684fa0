"""An import area of the test's own (settings.DATA_DIR → tmp_path) and image makers."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.register import register_lab_host
from storage.inventory import reconcile_pools
from storage.models import Pool
from storage.v2v.sources import import_root

MIB = 1024 * 1024
VARIANTS = ("monolithicSparse", "streamOptimized", "monolithicFlat", "twoGbMaxExtentSparse",
            "twoGbMaxExtentFlat")


@pytest.fixture
def area(settings: pytest.FixtureRequest, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    root = tmp_path / "data" / "import"
    root.mkdir(parents=True)
    return root


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True,
                          text=True).stdout


def patterned_raw(path: Path, size: int) -> Path:
    """A raw image with random data in a few places and zeros elsewhere."""
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset in (0, size // 3, size - MIB):
            handle.seek(offset)
            handle.write(os.urandom(MIB // 2))
    return path


def make_vmdk(directory: Path, name: str, subformat: str, source: Path) -> Path:
    target = directory / f"{name}.vmdk"
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={subformat}",
             str(source), str(target))
    return target


@pytest.fixture
def local_pool(lab_hosts: list[Any]) -> Pool:
    """The `local` dir pool of a real lab host (its files are readable here)."""
    host, _ = register_lab_host(lab_hosts[0])
    reconcile_pools(host)
    return Pool.objects.get(host=host, name="local")


@pytest.fixture
def lab_area() -> Iterator[Path]:
    """A directory of the test's own inside the real import area (lab tests keep the
    data dir the lab hosts were started with)."""
    path = import_root() / f"t-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
