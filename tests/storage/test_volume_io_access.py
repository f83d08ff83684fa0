"""The short way to a volume's bytes (its file, read and written directly) is taken only
where this process may read and write the file; elsewhere the bytes go through libvirt.
The installed appliance is the case: it runs as the user ``xenweb`` and its dom0's pool
files are root's (tests/appliance uploads through it). Shown here with a file this process
may not write although it is root: a pool directory mounted read-only, in a mount
namespace of a child process (the same check, access(2), refuses both)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.volume_io import direct_file

BASE = Path(__file__).resolve().parent.parent.parent
PROBE = (
    "import django; django.setup()\n"
    "from storage.volume_io import direct_file\n"
    "print(direct_file('xen:///system', {path!r}, files_local=True))\n"
)


@pytest.fixture
def pool_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="xenweb-ro-pool-"))
    (path / "vol.img").write_bytes(b"\0" * 4096)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _probe(path: Path, *, read_only: bool) -> str:
    code = PROBE.format(path=str(path / "vol.img"))
    mount = ('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && '
             if read_only else "")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'{mount}exec "$1" -c "$2"', str(path), sys.executable, code],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(BASE),
             "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE",
                                                      "tests.settings")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_a_file_this_process_may_not_write_goes_through_libvirt(pool_dir: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a read-only mount in a namespace")
    assert _probe(pool_dir, read_only=True) == "None"
    assert _probe(pool_dir, read_only=False) == str(pool_dir / "vol.img")
    # In this process the file may be written: the short way.
    assert direct_file("xen:///system", str(pool_dir / "vol.img"), files_local=True) == str(
        pool_dir / "vol.img")
