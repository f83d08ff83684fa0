"""The Xen lab's and the SSH transport's parts that need no Xen host (fast, no root)."""

from __future__ import annotations

import lzma
import socket
import subprocess
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from hosts.services import HostError, check_host_key
from hosts.virt import HostDriverError, validate_uri
from hosts.virt.connection import _libvirt_uri
from lab.xen import boot, hypervisor
from lab.xen.image import Dom0Image, Dom0ImageError, cache_key, extract_vmlinux
from xenweb.appliance import sshkeys


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_key(tmp_path: Path, name: str = "key") -> str:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True, capture_output=True, timeout=30)
    return key.with_suffix(".pub").read_text().strip()


def keygen_fingerprint(tmp_path: Path, line: str) -> str:
    path = tmp_path / "line.pub"
    path.write_text(line + "\n")
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return out.split()[1]


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    line = make_key(tmp_path)
    assert sshkeys.fingerprint(line) == keygen_fingerprint(tmp_path, line)
    assert sshkeys.fingerprint(f"[127.0.0.1]:2222 {line}") == sshkeys.fingerprint(line)


def test_pin_replace_and_unpin(tmp_path: Path) -> None:
    first, second = make_key(tmp_path, "a"), make_key(tmp_path, "b")
    sshkeys.unpin_host_key("192.0.2.7", 2222)
    assert sshkeys.pinned_fingerprint("192.0.2.7", 2222) is None
    sshkeys.pin_host_key("192.0.2.7", 2222, first)
    sshkeys.pin_host_key("192.0.2.7", 22, second)  # another port: another host
    assert sshkeys.pinned_fingerprint("192.0.2.7", 2222) == sshkeys.fingerprint(first)
    assert sshkeys.pinned_fingerprint("192.0.2.7") == sshkeys.fingerprint(second)
    sshkeys.pin_host_key("192.0.2.7", 2222, second)
    assert sshkeys.pinned_fingerprint("192.0.2.7", 2222) == sshkeys.fingerprint(second)
    text = sshkeys.known_hosts_path().read_text()
    assert text.count("[192.0.2.7]:2222 ") == 1 and "\n192.0.2.7 ssh-ed25519 " in f"\n{text}"
    assert sshkeys.known_hosts_path().stat().st_mode & 0o077 == 0
    sshkeys.unpin_host_key("192.0.2.7", 2222)
    sshkeys.unpin_host_key("192.0.2.7", 22)
    assert sshkeys.pinned_fingerprint("192.0.2.7", 2222) is None


def test_verify_pins_on_first_contact_and_refuses_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offered = {"line": f"[192.0.2.8]:2200 {make_key(tmp_path, 'a')}"}
    monkeypatch.setattr(sshkeys, "scan_host_key", lambda host, port: (
        offered["line"], sshkeys.fingerprint(offered["line"])))
    sshkeys.unpin_host_key("192.0.2.8", 2200)
    try:
        first = sshkeys.verify_host_key("192.0.2.8", 2200)
        assert sshkeys.pinned_fingerprint("192.0.2.8", 2200) == first
        offered["line"] = f"[192.0.2.8]:2200 {make_key(tmp_path, 'b')}"
        new = sshkeys.fingerprint(offered["line"])
        with pytest.raises(HostError) as excinfo:
            check_host_key("xen+ssh://root@192.0.2.8:2200/system")
        assert str(excinfo.value) == (
            f"host key of [192.0.2.8]:2200 changed: expected {first}, got {new}"
        )
        # The operator confirms the new key: it replaces the pin.
        assert check_host_key("xen+ssh://root@192.0.2.8:2200/system", new) == new
        assert sshkeys.pinned_fingerprint("192.0.2.8", 2200) == new
        with pytest.raises(HostError, match="does not match the confirmed fingerprint"):
            check_host_key("xen+ssh://root@192.0.2.8:2200/system", first)
    finally:
        sshkeys.unpin_host_key("192.0.2.8", 2200)


def test_unreadable_host_key_leaves_the_error_to_the_connection(closed_port: int) -> None:
    assert check_host_key(f"xen+ssh://root@127.0.0.1:{closed_port}/system") is None
    with pytest.raises(HostError, match="cannot read the SSH host key"):
        check_host_key(f"xen+ssh://root@127.0.0.1:{closed_port}/system", "SHA256:x")


def test_ssh_uris_use_libssh_with_the_appliance_key_and_known_hosts() -> None:
    uri = _libvirt_uri("xen+ssh://root@xen1.example.com:2222/system")
    parts = urlsplit(uri)
    assert parts.scheme == "xen+libssh" and parts.netloc == "root@xen1.example.com:2222"
    params = dict(parse_qsl(parts.query))
    assert params == {
        "keyfile": str(sshkeys.ensure_keypair()),
        "known_hosts": str(sshkeys.known_hosts_path()),
        "known_hosts_verify": "normal",
        "sshauth": "privkey",
    }
    given = _libvirt_uri("qemu+ssh://h/system?keyfile=/etc/k&no_tty=1")
    assert dict(parse_qsl(urlsplit(given).query))["keyfile"] == "/etc/k"
    assert "no_tty" not in given
    assert _libvirt_uri("qemu+tcp://h/system") == "qemu+tcp://h/system"
    assert _libvirt_uri("test:///default") == "test:///default"


def test_host_key_checks_cannot_be_turned_off() -> None:
    ok = "xen+ssh://root@h/system?known_hosts_verify=normal"
    assert validate_uri(ok) == ok
    for value in ("auto", "ignore"):
        with pytest.raises(HostDriverError, match="turns off host key checks"):
            validate_uri(f"xen+ssh://root@h/system?known_hosts_verify={value}")
    with pytest.raises(HostDriverError, match="unauthenticated"):
        validate_uri("xen+tcp://h/system")


def test_extract_vmlinux() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    bzimage = b"MZ setup code" + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"\0" * 32
    assert extract_vmlinux(bzimage) == elf
    with pytest.raises(Dom0ImageError, match="not an xz-compressed bzImage"):
        extract_vmlinux(b"MZ no payload")


def test_cache_key_follows_package_versions() -> None:
    one = cache_key({"xen-hypervisor-4.17-amd64": "4.17.7", "linux-image-amd64": "6.1"})
    assert one == cache_key({"linux-image-amd64": "6.1", "xen-hypervisor-4.17-amd64": "4.17.7"})
    assert one != cache_key({"xen-hypervisor-4.17-amd64": "4.17.8", "linux-image-amd64": "6.1"})


SOURCES = """Package: xen
Version: 4.17.7+13-g2445b30a44-0+deb12u1
Directory: pool/updates/main/x/xen
Checksums-Sha256:
 aa11 3000 xen_4.17.7+13-g2445b30a44-0+deb12u1.dsc
 7722ae 4740076 xen_4.17.7+13-g2445b30a44.orig.tar.xz
 658ca4 140728 xen_4.17.7+13-g2445b30a44-0+deb12u1.debian.tar.xz

Package: xen-tools
Version: 4.17.0
Directory: pool/main/x/xen-tools
Checksums-Sha256:
 bb22 100 xen-tools_4.17.0.orig.tar.xz

Package: xen
Version: 4.20.1-1
Directory: pool/main/x/xen
Checksums-Sha256:
 cc33 100 xen_4.20.1.orig.tar.xz
"""


def test_xen_source_is_found_in_the_sources_index() -> None:
    found = hypervisor.parse_sources(SOURCES, "http://mirror/debian-security")
    assert found == [hypervisor.SourcePackage(
        "4.17.7+13-g2445b30a44-0+deb12u1",
        "http://mirror/debian-security/pool/updates/main/x/xen/"
        "xen_4.17.7%2B13-g2445b30a44.orig.tar.xz",
        "7722ae")]


def test_a_tarball_with_the_wrong_checksum_is_not_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No network here: _fetch is replaced by a function returning other bytes.
    monkeypatch.setattr(hypervisor, "_fetch", lambda url: b"not the tarball")
    source = hypervisor.SourcePackage("4.17.7", "http://mirror/x/xen_4.17.7.orig.tar.xz", "00")
    with pytest.raises(hypervisor.HypervisorBuildError, match="checksum mismatch"):
        hypervisor.download_source([source], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_debian_config_gets_shadow_paging() -> None:
    debian = "CONFIG_PV=y\n# CONFIG_SHADOW_PAGING is not set\nCONFIG_HVM=y\n"
    config = hypervisor.shadow_config(debian).splitlines()
    assert "CONFIG_SHADOW_PAGING=y" in config and "CONFIG_PV=y" in config
    assert not any(line.startswith("# CONFIG_SHADOW_PAGING") for line in config)


def test_qemu_argv(tmp_path: Path) -> None:
    image = Dom0Image(tmp_path, tmp_path / "dom0.img", tmp_path / "xen", tmp_path / "vmlinux",
                      tmp_path / "initrd.img", {})
    files = boot.HostFiles(tmp_path / "hosts" / "xen1")
    argv = boot.qemu_argv(image, files, name="xen1", ssh_port=16600)
    assert argv[0] == "qemu-system-x86_64"

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert value("-accel") == "tcg,thread=multi,tb-size=256"
    assert value("-cpu") == boot.CPU and ",-avx2," in boot.CPU
    assert value("-kernel") == str(tmp_path / "xen")
    assert "dom0_mem=768M smap=0 smep=0 cet=0" in value("-append")
    assert value("-initrd") == (
        f"{tmp_path / 'vmlinux'} {boot.DOM0_ARGS} systemd.machine_id={boot.machine_id('xen1')},"
        f"{tmp_path / 'initrd.img'}"
    )
    assert "bootscrub=false" in value("-append")
    assert value("-netdev") == "user,id=net0,hostfwd=tcp:127.0.0.1:16600-:22"
    assert argv.count("-netdev") == 1  # no storage network unless asked
    assert f"file={files.overlay},format=qcow2" in " ".join(argv)
    assert files.marker in " ".join(argv)
    with pytest.raises(Exception, match="cannot take a path"):
        boot.qemu_argv(image, boot.HostFiles(tmp_path / "a,b"), name="x", ssh_port=1)


def test_storage_network_link(tmp_path: Path) -> None:
    image = Dom0Image(tmp_path, tmp_path / "dom0.img", tmp_path / "xen", tmp_path / "vmlinux",
                      tmp_path / "initrd.img", {})
    first = boot.PeerLink(index=1, listen=20016)
    second = boot.PeerLink(index=2, connect=20016)
    argv = boot.qemu_argv(image, boot.HostFiles(tmp_path / "xen1"), name="xen1",
                          ssh_port=16600, peer=first)
    netdevs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-netdev"]
    devices = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-device"]
    assert netdevs[1] == "socket,id=peer,listen=127.0.0.1:20016"
    assert devices[1] == "virtio-net-pci,netdev=peer,mac=52:54:00:99:00:01"
    assert second.netdev() == "socket,id=peer,connect=127.0.0.1:20016"
    assert (first.address, second.address) == ("10.99.0.1", "10.99.0.2")
    assert "MACAddress=52:54:00:99:00:02" in second.network_file()
    assert "Address=10.99.0.2/24" in second.network_file()
    with pytest.raises(Exception, match="either listens or connects"):
        boot.PeerLink(index=3).netdev()
    assert boot.machine_id("xen1") != boot.machine_id("xen2")
    assert len(boot.machine_id("xen1")) == 32


def test_dom0_apt_sources_follow_the_machine_s_suites() -> None:
    from lab.xen.image import apt_sources

    assert apt_sources("http://deb.example/debian", "http://deb.example/debian-security") == (
        "deb http://deb.example/debian bookworm main\n"
        "deb http://deb.example/debian bookworm-updates main\n"
        "deb http://deb.example/debian-security bookworm-security main\n"
    )


def test_seed_disk_carries_text_files(tmp_path: Path) -> None:
    files = boot.HostFiles(tmp_path / "xen1")
    boot.ensure_host_key(files)
    boot.make_seed(files, authorized_key="ssh-ed25519 AAAA test", hostname="xenweb-xen1",
                   extra={}, texts={"/etc/exports": "/var/lib/xen/images 10.99.0.0/24(rw)\n"})
    listing = subprocess.run(["debugfs", "-R", "ls -p /files/etc", str(files.seed)],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    assert "/exports/" in listing
    with pytest.raises(Exception, match="absolute path"):
        boot.make_seed(files, authorized_key="k", hostname="h", extra={},
                       texts={"etc/x": "relative"})
