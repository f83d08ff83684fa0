"""V2V writes (and exports) a volume's file itself only where the host's files are this
machine's (``Host.files_local``, or a host without a remote name); an insecure transport
says nothing about that."""

from __future__ import annotations

from pathlib import Path

import pytest

from conversions.v2v.import_job import _reachable
from hosts.models import Host

LAB_URI = "qemu+tcp://127.1.0.3:16600/system"


@pytest.mark.parametrize(("uri", "insecure", "files_local", "reachable"), [
    (LAB_URI, True, True, True),
    (LAB_URI, False, True, True),
    (LAB_URI, True, False, False),
    ("xen+ssh://root@dom0.example/system", False, False, False),
    ("xen:///system", False, False, True),
])
def test_the_files_capability_decides(uri: str, insecure: bool, files_local: bool,
                                      reachable: bool, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"x")
    host = Host(name="h", uri=uri, allow_insecure_transport=insecure, files_local=files_local)
    assert _reachable(host, str(image)) is reachable
    assert not _reachable(host, str(tmp_path / "gone"))
