"""storage.access.holds_files: the one rule for "this machine holds this host's volume
files", which both the direct file I/O (storage.volume_io) and the link checks and
downloads (storage.access, storage.transfers) follow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hosts.models import Host
from hosts.virt import VirtError, VirtTarget, demo_uri
from storage import access, volume_io
from storage.models import Pool, Volume

HOSTS = [
    # (uri, Host.files_local, holds the files here)
    ("xen:///system", False, True),
    ("xen:///", False, True),
    ("qemu:///system", False, True),
    ("qemu+tcp://127.1.0.3:16600/system", True, True),  # a lab host: in our namespace
    ("qemu+tcp://127.1.0.3:16600/system", False, False),
    ("xen+ssh://root@dom0.example/system", False, False),
    ("xen+ssh://root@[2001:db8::7]/system", False, False),
    ("xen+tls://dom0.example/system", False, False),
    ("test:///default", False, False),  # libvirt's test driver keeps pools in memory
    ("test:///default", True, False),
]


@pytest.mark.parametrize(("uri", "files_local", "holds"), HOSTS)
def test_the_rule(uri: str, files_local: bool, holds: bool) -> None:
    assert access.holds_files(uri, files_local=files_local) is holds


def test_the_demo_host_lives_in_this_process_not_in_files() -> None:
    uri = demo_uri()
    assert Host(name="demo", uri=uri).in_process_only
    assert not access.holds_files(uri, files_local=False)
    assert not access.holds_files(uri, files_local=True)


@pytest.mark.parametrize(("uri", "files_local", "holds"), HOSTS)
def test_file_io_and_the_link_checks_agree(uri: str, files_local: bool, holds: bool, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(volume_io.IO_ENV, raising=False)
    image = tmp_path / "disk.img"
    image.write_bytes(b"x")
    host = Host(name="h", uri=uri, files_local=files_local)
    pool = Pool(host=host, name="p", pool_type="dir", target_path=str(tmp_path))
    assert access.holds_file(pool) is holds
    assert (volume_io.direct_file(uri, str(image), files_local=files_local) == str(image)) is holds
    assert (volume_io.direct_path(host, str(image)) == str(image)) is holds


@pytest.mark.parametrize(("uri", "files_local", "holds"), HOSTS)
def test_a_link_is_refused_wherever_this_machine_holds_the_file(
        uri: str, files_local: bool, holds: bool, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(volume_io.IO_ENV, raising=False)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    link = pool_dir / "disk.img"
    os.symlink(outside / "secret", link)
    host = Host(name="h", uri=uri, files_local=files_local)
    pool = Pool(host=host, name="p", pool_type="dir", target_path=str(pool_dir))
    volume = Volume(pool=pool, name="disk.img", path=str(link))
    assert access.link_in_pool(volume) is holds
    if holds:
        with pytest.raises(VirtError, match="symbolic link"):
            volume_io.direct_file(uri, str(link), files_local=files_local)
    else:  # not here: the host's libvirt reads its own file
        assert volume_io.direct_file(uri, str(link), files_local=files_local) is None


LAB_URI = "qemu+tcp://127.1.0.3:16600/system"


@pytest.mark.parametrize(("insecure", "files_local"), [(True, False), (False, True)])
def test_only_files_local_makes_a_hosts_files_this_machines(
        insecure: bool, files_local: bool, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An insecure transport says nothing about where the files are, and files here say
    nothing about the transport."""
    monkeypatch.delenv(volume_io.IO_ENV, raising=False)
    image = tmp_path / "disk.img"
    image.write_bytes(b"x")
    host = Host(name="h", uri=LAB_URI, allow_insecure_transport=insecure,
                files_local=files_local)
    pool = Pool(host=host, name="p", pool_type="dir", target_path=str(tmp_path))
    assert access.holds_file(pool) is files_local
    assert (volume_io.direct_path(host, str(image)) == str(image)) is files_local


@pytest.mark.parametrize(("insecure", "files_local"), [(True, False), (False, True)])
def test_the_libvirt_way_takes_the_transport_capability_only(
        insecure: bool, files_local: bool, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A volume without a file here (a block device, a host elsewhere) is read through
    libvirt, allowed an insecure transport exactly when the host is."""
    monkeypatch.delenv(volume_io.IO_ENV, raising=False)
    seen: dict[str, Any] = {}

    def download(target: VirtTarget, path: str, **kwargs: Any) -> str:
        seen["target"] = target
        return "libvirt"

    monkeypatch.setattr(volume_io.virt, "VolumeDownload", download)
    host = Host(name="h", uri=LAB_URI, allow_insecure_transport=insecure,
                files_local=files_local)
    assert volume_io.open_reader(host, str(tmp_path / "gone"), offset=0, length=1, chunk=1,
                                 file_chunk=1) == "libvirt"
    assert seen["target"] == VirtTarget(LAB_URI, allow_insecure=insecure)
