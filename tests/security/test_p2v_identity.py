"""P2V has its own SSH identity and known_hosts, never reaches an enrolled host or the
appliance itself, never changes the key a dom0 is trusted with; only an administrator
re-pins a host's key (audited); every malformed inventory is a P2V error, never a 500.

Issue 18: C3 (P2V used the dom0 key on any address), H2 (one known_hosts for dom0s and P2V
sources), L3 (malformed inventories gave 500).

The tests at the end run a real sshd as the source in a network namespace of its own (as
tests/conversions/p2v/test_p2v_lab.py; they need root). Where a test needs DNS answers that no
resolver here gives (a name that resolves to a dom0, an answer that changes), it replaces
``socket.getaddrinfo`` and says so; where it shows that no connection was made to an
address that is not this machine's, it records the calls of the one function that would
connect first (``scan_host_key``).
"""

from __future__ import annotations

import ast
import ipaddress
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from conversions.p2v import address as p2v_address
from conversions.p2v import inventory as inv
from conversions.p2v import ssh as p2v_ssh
from conversions.p2v.ssh import P2VError, Source
from hosts import services as host_services
from hosts.models import Host
from tests.conversions.p2v.p2v_source import (
    IP,
    SSHD,
    NamespaceUnavailable,
    SourceNetwork,
    SshServer,
    make_source_network,
)
from xenweb.appliance import sshkeys
from xenweb.appliance.sshkeys import DOM0_IDENTITY, DOM0_TRUST, P2V_IDENTITY, P2V_TRUST
from xenweb.audit.models import AuditRecord

P2V_DIR = Path(__file__).resolve().parents[2] / "conversions" / "p2v"


def post(client: Client, path: str, data: dict[str, Any]) -> Any:
    return client.post(path, data, content_type="application/json")


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


# --- two identities, two trust stores ---------------------------------------------------------

def test_p2v_has_its_own_key_pair_and_known_hosts() -> None:
    p2v_key, dom0_key = P2V_IDENTITY.private_key(), DOM0_IDENTITY.private_key()
    assert p2v_key != dom0_key and p2v_key.parent == dom0_key.parent
    assert p2v_key.name == "id_ed25519_p2v" and p2v_key.stat().st_mode & 0o077 == 0
    assert P2V_IDENTITY.public_key() != DOM0_IDENTITY.public_key()
    assert P2V_TRUST.path() != DOM0_TRUST.path()
    assert sshkeys.known_hosts_path() == DOM0_TRUST.path()  # what libvirt and VNC use
    args = p2v_ssh.ssh_args(Source("198.51.100.7", connect_to="198.51.100.7"), ["true"])
    assert args[args.index("-i") + 1] == str(p2v_key)
    assert f"UserKnownHostsFile={P2V_TRUST.path()}" in args
    assert str(dom0_key) not in args
    assert not any(arg.endswith(f"={DOM0_TRUST.path()}") for arg in args)
    # No ssh_config, agent or other identity can add the dom0 key behind our back.
    assert args[args.index("-F") + 1] == "/dev/null"
    assert "IdentityAgent=none" in args and "IdentitiesOnly=yes" in args


DOM0_NAMES = {"DOM0_IDENTITY", "DOM0_TRUST", "ensure_keypair", "public_key",
              "known_hosts_path", "pin_host_key", "pinned_fingerprint", "unpin_host_key",
              "verify_host_key", "KEY_NAME", "KNOWN_HOSTS", "key_dir",
              # the dom0 identity as the adapter holds it (hosts.virt.ssh)
              "dom0_login", "use_dom0_login", "host_login"}


@pytest.mark.parametrize("module", sorted(path.name for path in P2V_DIR.glob("*.py")))
def test_p2v_code_never_names_the_dom0_key_or_known_hosts(module: str) -> None:
    """Structural: no P2V module imports or names the dom0 identity or trust store."""
    tree = ast.parse((P2V_DIR / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "xenweb.appliance.sshkeys":
            assert not {alias.name for alias in node.names} & DOM0_NAMES, module
        if isinstance(node, ast.Import):
            assert all(alias.name != "xenweb.appliance.sshkeys" for alias in node.names)
        # public_key is also a field name (API answers): importing it is what counts.
        if isinstance(node, ast.Attribute):
            assert node.attr not in DOM0_NAMES - {"public_key"}, (module, node.attr)
        if isinstance(node, ast.Name):
            assert node.id not in DOM0_NAMES - {"public_key"}, (module, node.id)


def test_nothing_connects_to_a_source_whose_address_was_not_checked() -> None:
    with pytest.raises(P2VError, match="was not checked"):
        p2v_ssh.ssh_args(Source("198.51.100.7"), ["true"])
    with pytest.raises(P2VError, match="was not checked"):
        p2v_ssh.confirm_host_key(Source("198.51.100.7"), None)


@pytest.mark.django_db
def test_the_p2v_page_and_api_show_the_p2v_key(operator_client: Client,
                                               viewer_client: Client) -> None:
    page = operator_client.get("/storage/p2v/").content.decode()
    assert P2V_IDENTITY.public_key() in page
    assert DOM0_IDENTITY.public_key() not in page
    answer = operator_client.get("/api/v1/p2v/public-key/")
    assert answer.status_code == 200
    assert answer.json() == {"public_key": P2V_IDENTITY.public_key()}
    assert viewer_client.get("/api/v1/p2v/public-key/").status_code == 403


# --- the appliance's own addresses: refused before any connection -------------------------

@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A dual-stack TCP listener on every address of this machine: any connection P2V made
    to this machine on its port would land here."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    sock.listen(16)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def assert_no_connection(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.accept()[0].close()


def _own_address() -> str:
    for ip in sorted(p2v_address._interface_addresses(), key=str):
        if not ip.is_loopback and not ip.is_link_local and ip.version == 4:
            return str(ip)
    return ""


SELF = [  # (address, why it is refused)
    ("127.0.0.1", "loopback"), ("127.1", "loopback"), ("2130706433", "loopback"),
    ("0x7f.1", "loopback"), ("0x7f000001", "loopback"), ("0177.0.0.1", "loopback"),
    ("127.0.0.1.", "loopback"), ("127.255.255.254", "loopback"), (" 127.0.0.1 ", "loopback"),
    ("[127.0.0.1]", "loopback"), ("localhost", "loopback"), ("LocalHost", "loopback"),
    ("localhost.", "loopback"), ("::1", "loopback"), ("[::1]", "loopback"),
    ("0:0:0:0:0:0:0:1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("[::ffff:7f00:1]", "loopback"), ("::127.0.0.1", "loopback"),
    ("2002:7f00:1::", "loopback"), ("64:ff9b::7f00:1", "loopback"),
    ("0.0.0.0", "unspecified"),  # noqa: S104
    ("0", "unspecified"), ("::", "unspecified"),
    ("[::]", "unspecified"), ("0.1.2.3", "unspecified"), ("::ffff:0.0.0.0", "unspecified"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "not the address of one machine"),
    ("255.255.255.255", "not the address of one machine"),
    ("ff02::1", "not the address of one machine"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("address", "why"), SELF)
def test_the_appliance_itself_is_refused_before_any_connection(
        operator_client: Client, listener: socket.socket, address: str, why: str) -> None:
    port = listener.getsockname()[1]
    answer = post(operator_client, "/api/v1/p2v/inventory/", {"address": address, "port": port})
    assert answer.status_code == 400, answer.content
    assert answer.json()["detail"].startswith("P2V refuses")
    assert why in answer.json()["detail"]
    assert_no_connection(listener)
    assert AuditRecord.objects.get(action="p2v.inventory").result == "failed"


@pytest.mark.django_db
def test_this_machines_interface_addresses_and_name_are_refused(
        operator_client: Client, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    own = _own_address()
    for address in filter(None, (own, f"::ffff:{own}" if own else "", socket.gethostname())):
        answer = post(operator_client, "/api/v1/p2v/inventory/",
                      {"address": address, "port": port})
        assert answer.status_code == 400, (address, answer.content)
        assert "this appliance itself" in answer.json()["detail"], address
    assert_no_connection(listener)


@pytest.mark.django_db
def test_the_page_and_the_start_refuse_the_appliance_too(
        operator_client: Client, demo: Host, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    page = operator_client.post("/storage/p2v/", {"step": "inventory", "address": "0x7f.1",
                                                  "port": port})
    assert page.status_code == 200 and "P2V refuses 0x7f.1 (127.0.0.1)" in \
        page.content.decode()
    pool = demo.pools.get(name="default")
    started = post(operator_client, "/api/v1/p2v/", {
        "address": "::ffff:127.0.0.1", "port": port, "host_key_fingerprint": "SHA256:x",
        "disks": ["/dev/sda"], "host": demo.pk, "pool": pool.pk, "name": "p2v-self"})
    assert started.status_code == 400 and "loopback" in started.json()["detail"]
    assert_no_connection(listener)


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["", "   ", "-oProxyCommand=sh", "a b", "host/x",
                                     "root@host", "a\nb", "x" * 300, "[]", "\u0000"])
def test_addresses_that_are_no_host_are_a_clear_400(operator_client: Client,
                                                    address: str) -> None:
    answer = post(operator_client, "/api/v1/p2v/inventory/", {"address": address})
    assert answer.status_code == 400
    assert "address" in answer.json()


# --- enrolled hosts: refused by address, by name and by host key ---------------------------

@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (host, port) P2V tried to read a host key from: its first network contact.
    Recorded, and answered with an error instead of a connection."""
    seen: list[tuple[str, int]] = []

    def scan(host: str, port: int = 22, timeout: float = 10.0) -> tuple[str, str]:
        seen.append((host, port))
        raise sshkeys.HostKeyError(f"not scanned in this test: {host}")

    monkeypatch.setattr(p2v_ssh, "scan_host_key", scan)
    return seen


@pytest.fixture
def dom0s(db: Any) -> list[Host]:
    return [
        Host.objects.create(name="dom0-a", uri="xen+ssh://root@192.0.2.10/system"),
        Host.objects.create(name="dom0-b", uri="xen+ssh://admin@[2001:db8::10]:2222/system",
                            migration_uri="xen+ssh://root@198.51.100.20/system"),
        Host.objects.create(name="dom0-c", uri="xen+ssh://root@Dom0-C.invalid/system"),
    ]


ENROLLED = [  # (address given to P2V, the enrolled host it is)
    ("192.0.2.10", "dom0-a"), ("3221225994", "dom0-a"), ("0xc0.0.2.10", "dom0-a"),
    ("0300.0.2.10", "dom0-a"), ("192.0.522", "dom0-a"), ("192.0.2.10.", "dom0-a"),
    (" 192.0.2.10\t", "dom0-a"), ("[192.0.2.10]", "dom0-a"), ("::ffff:192.0.2.10", "dom0-a"),
    ("[::ffff:c000:20a]", "dom0-a"), ("::192.0.2.10", "dom0-a"),
    ("2002:c000:20a::1", "dom0-a"), ("64:ff9b::192.0.2.10", "dom0-a"),
    ("2001:db8::10", "dom0-b"), ("2001:DB8:0:0::0010", "dom0-b"), ("[2001:db8::10]", "dom0-b"),
    ("198.51.100.20", "dom0-b"),  # its migration address
    ("dom0-c.invalid", "dom0-c"), ("DOM0-C.INVALID.", "dom0-c"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("address", "host"), ENROLLED)
def test_an_enrolled_hosts_address_is_refused_before_any_connection(
        operator_client: Client, dom0s: list[Host], connections: list[tuple[str, int]],
        address: str, host: str) -> None:
    before = read_bytes(DOM0_TRUST.path()), read_bytes(P2V_TRUST.path())
    answer = post(operator_client, "/api/v1/p2v/inventory/", {
        "address": address, "port": 2222, "host_key_fingerprint": "SHA256:" + "A" * 43})
    assert answer.status_code == 400, answer.content
    detail = answer.json()["detail"]
    assert f"enrolled host {host}" in detail and "never copies a managed host" in detail
    assert connections == []
    assert (read_bytes(DOM0_TRUST.path()), read_bytes(P2V_TRUST.path())) == before


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """Names this test's resolver knows (no DNS server here can be told what to answer):
    each name's answers in turn, the last one repeated."""
    answers: dict[str, list[list[str]]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.lower() in answers:
            queue = answers[host.lower()]
            found = queue.pop(0) if len(queue) > 1 else queue[0]
            return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6,
                     "", (ip, int(port or 0))) for ip in found]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.mark.django_db
def test_a_name_that_resolves_to_a_dom0_is_refused(
        operator_client: Client, dom0s: list[Host], connections: list[tuple[str, int]],
        fake_dns: dict[str, list[list[str]]]) -> None:
    fake_dns["alias.example"] = [["192.0.2.10"]]
    fake_dns["multi.example"] = [["198.51.100.7", "2001:db8::10"]]  # one of two records
    fake_dns["dom0-by-name.example"] = [["203.0.113.5"]]
    Host.objects.create(name="dom0-d", uri="xen+ssh://root@dom0-by-name.example/system")
    for address, host in (("alias.example", "dom0-a"), ("multi.example", "dom0-b"),
                          ("203.0.113.5", "dom0-d")):
        answer = post(operator_client, "/api/v1/p2v/inventory/", {"address": address})
        assert answer.status_code == 400, answer.content
        assert f"enrolled host {host}" in answer.json()["detail"]
    assert connections == []


@pytest.mark.django_db
def test_the_connection_goes_to_the_checked_address_not_the_name(
        dom0s: list[Host], connections: list[tuple[str, int]],
        fake_dns: dict[str, list[list[str]]]) -> None:
    """DNS rebinding: the name answers with a harmless address for the check and with
    loopback afterwards; ssh-keyscan and ssh are given the checked address only."""
    fake_dns["rebind.example"] = [["198.51.100.7"], ["127.0.0.1"]]
    source = p2v_address.checked(Source("rebind.example", 2200))
    assert source.connect_to == "198.51.100.7" and source.address == "rebind.example"
    assert socket.getaddrinfo("rebind.example", 22)[0][4][0] == "127.0.0.1"  # rebound now
    with pytest.raises(P2VError):
        p2v_ssh.confirm_host_key(source, None)
    assert connections == [("198.51.100.7", 2200)]
    args = p2v_ssh.ssh_args(source, ["true"])
    assert args[-2] == "198.51.100.7" and not any("rebind" in arg for arg in args)
    # The job checks again when it runs: by then the name points at this machine.
    with pytest.raises(p2v_address.AddressRefused, match="loopback"):
        p2v_address.checked(Source("rebind.example", 2200))


def test_embedded_ipv4_forms() -> None:
    forms = {str(form) for form in p2v_address.forms(ipaddress.ip_address("::ffff:10.1.2.3"))}
    assert forms == {"::ffff:a01:203", "10.1.2.3"}
    assert "10.1.2.3" in {str(f) for f in p2v_address.forms(
        ipaddress.ip_address("2002:a01:203::1"))}
    assert "10.1.2.3" in {str(f) for f in p2v_address.forms(
        ipaddress.ip_address("64:ff9b::a01:203"))}
    assert {str(f) for f in p2v_address.forms(ipaddress.ip_address("::1"))} == {"::1"}


# --- re-pinning an enrolled host's key: administrators only, audited ----------------------

@pytest.fixture
def local_sshd(tmp_path: Path) -> Iterator[SshServer]:
    """An sshd on 127.0.0.1 standing in for a dom0 whose key changed."""
    if not os.access(SSHD, os.X_OK):
        pytest.skip(f"needs {SSHD} (openssh-server)")
    server = SshServer(root=tmp_path, authorized_key="")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        DOM0_TRUST.unpin("127.0.0.1", server.port)


OLD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def real_fingerprint(server: SshServer) -> str:
    return subprocess.run(["/usr/bin/ssh-keygen", "-lf", str(server.host_key)], check=True,
                          capture_output=True, text=True).stdout.split()[1]


@pytest.mark.django_db
def test_only_an_admin_re_pins_a_hosts_key_and_it_is_audited(
        admin_client: Client, operator_client: Client, local_sshd: SshServer) -> None:
    host = Host.objects.create(name="dom0-new-key",
                               uri=f"xen+ssh://root@127.0.0.1:{local_sshd.port}/system")
    old = DOM0_TRUST.pin("127.0.0.1", local_sshd.port, OLD_KEY)
    new = real_fingerprint(local_sshd)
    url = f"/api/v1/hosts/{host.pk}/host-key/"
    assert post(operator_client, url, {"fingerprint": new}).status_code == 403
    assert operator_client.post(f"/hosts/{host.pk}/host-key/",
                                {"fingerprint": new}).status_code == 403
    assert DOM0_TRUST.pinned("127.0.0.1", local_sshd.port) == old
    assert admin_client.get(url).json() == {"pinned": old}

    wrong = post(admin_client, url, {"fingerprint": old})  # not what the host offers
    assert wrong.status_code == 400 and "does not match" in wrong.json()["detail"]
    assert DOM0_TRUST.pinned("127.0.0.1", local_sshd.port) == old
    failed = AuditRecord.objects.get(action="host.host_key", result="failed")
    assert failed.detail["old_fingerprint"] == old

    done = post(admin_client, url, {"fingerprint": new})
    assert done.status_code == 200 and done.json() == {"pinned": new}
    assert DOM0_TRUST.pinned("127.0.0.1", local_sshd.port) == new
    audit = AuditRecord.objects.get(action="host.host_key", result="ok")
    assert audit.detail == {"old_fingerprint": old, "new_fingerprint": new}
    assert audit.username == "alice-admin" and audit.target_id == str(host.pk)
    page = admin_client.get(f"/hosts/{host.pk}/").content.decode()
    assert f'id="pinned-host-key">{new}<' in page and 'id="host-key-fingerprint"' in page
    assert 'id="host-key-fingerprint"' not in operator_client.get(
        f"/hosts/{host.pk}/").content.decode()


@pytest.mark.django_db
def test_the_re_pin_service_itself_refuses_non_admins(operator_user: Any,
                                                      local_sshd: SshServer) -> None:
    host = Host.objects.create(name="dom0-x",
                               uri=f"xen+ssh://root@127.0.0.1:{local_sshd.port}/system")
    with pytest.raises(PermissionError):
        host_services.repin_host_key(host, real_fingerprint(local_sshd), user=operator_user)
    with pytest.raises(PermissionError):
        host_services.repin_host_key(host, real_fingerprint(local_sshd), user=None)
    assert DOM0_TRUST.pinned("127.0.0.1", local_sshd.port) is None


@pytest.mark.django_db
def test_enrolment_that_replaces_a_pin_is_audited_with_both_fingerprints(
        admin_user: Any, local_sshd: SshServer) -> None:
    from hosts.virt import VirtError

    uri = f"xen+ssh://root@127.0.0.1:{local_sshd.port}/system"
    old = DOM0_TRUST.pin("127.0.0.1", local_sshd.port, OLD_KEY)
    new = real_fingerprint(local_sshd)
    # The key is checked and re-pinned first; the libvirt connection then fails (no
    # libvirtd behind this sshd), after the re-pin was audited.
    with pytest.raises((VirtError, host_services.HostError)):
        host_services.enrol_host(name="dom0-y", uri=uri, user=admin_user,
                                 host_key_fingerprint=new)
    assert DOM0_TRUST.pinned("127.0.0.1", local_sshd.port) == new
    audit = AuditRecord.objects.get(action="host.host_key")
    assert audit.detail["old_fingerprint"] == old and audit.detail["new_fingerprint"] == new


# --- malformed inventories: a P2V error that names the section, never a 500 ---------------

GOOD = {
    "hostname": "source", "os-release": 'PRETTY_NAME="Debian 12"\nID=debian',
    "cpuinfo": "processor : 0\nvendor_id : GenuineIntel\nmodel name : Xeon\nflags : pae lm\n",
    "meminfo": "MemTotal:        2048000 kB", "firmware": "bios",
    "lsblk": json.dumps({"blockdevices": [{"name": "sda", "path": "/dev/sda", "type": "disk",
                                           "size": 1 << 30, "rm": False, "ro": "0",
                                           "mountpoints": [None], "children": [
                                               {"name": "sda1", "size": "1048576",
                                                "fstype": "ext4", "mountpoint": None}]}]}),
    "blkid": "", "partx": "/dev/sdb 1 2048 4096 ext4",
    "iplink": json.dumps([{"ifname": "eth0", "link_type": "ether",
                           "address": "52:54:00:12:34:56", "operstate": "UP", "mtu": 1500}]),
    "tools": "python3 gzip", "uid": "0",
}


def output(**changed: str | bytes) -> bytes:
    parts = {**GOOD, **changed}
    return b"".join(b"##" + name.encode() + b"\n" + (value if isinstance(value, bytes)
                                                     else value.encode()) + b"\n"
                    for name, value in parts.items() if value is not None)


def lsblk(*devices: Any) -> str:
    return json.dumps({"blockdevices": list(devices)})


def disk(**fields: Any) -> dict[str, Any]:
    return {"name": "sda", "path": "/dev/sda", "type": "disk", "size": 1 << 30, **fields}


MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty answer", b"", "output"),
    ("cut short", output()[:200], "output"),
    ("not the script's answer", b"<html>login banner</html>\n", "output"),
    ("lsblk is a list", output(lsblk="[]"), "lsblk"),
    ("lsblk has no blockdevices", output(lsblk="{}"), "lsblk"),
    ("blockdevices is an object", output(lsblk='{"blockdevices": {"sda": 1}}'), "lsblk"),
    ("blockdevices is text", output(lsblk='{"blockdevices": "sda"}'), "lsblk"),
    ("a device is a number", output(lsblk=lsblk(1)), "block device 1"),
    ("size is text", output(lsblk=lsblk(disk(size="big"))), "block device 1"),
    ("size is negative", output(lsblk=lsblk(disk(size=-1))), "block device 1"),
    ("size is huge", output(lsblk=lsblk(disk(size=10**30))), "block device 1"),
    ("size is a fraction", output(lsblk=lsblk(disk(size=1.5))), "block device 1"),
    ("size is true", output(lsblk=lsblk(disk(size=True))), "block device 1"),
    ("size is a list", output(lsblk=lsblk(disk(size=[1]))), "block device 1"),
    ("size is infinite", output(lsblk='{"blockdevices": [{"name": "sda", "type": "disk", '
                                      '"size": Infinity}]}'), "block device 1"),
    ("size is NaN", output(lsblk='{"blockdevices": [{"name": "sda", "type": "disk", '
                                 '"size": NaN}]}'), "block device 1"),
    ("size has 5000 digits", output(lsblk='{"blockdevices": [{"name": "sda", "type": '
                                          '"disk", "size": ' + "9" * 5000 + "}]}"), "lsblk"),
    ("size text has 30 digits", output(lsblk=lsblk(disk(size="9" * 30))), "block device 1"),
    ("size text in other digits", output(lsblk=lsblk(disk(size="\u0661\u0662"))),
     "block device 1"),
    ("no name nor path", output(lsblk=lsblk({"type": "disk", "size": 1})), "block device 1"),
    ("path outside /dev", output(lsblk=lsblk(disk(path="/etc/shadow"))), "block device 1"),
    ("path climbs out of /dev", output(lsblk=lsblk(disk(path="/dev/../etc/shadow"))),
     "block device 1"),
    ("path with a line break", output(lsblk=lsblk(disk(path="/dev/sda\n##uid"))),
     "block device 1"),
    ("name is a number", output(lsblk=lsblk({"name": 5, "type": "disk", "size": 1})),
     "block device 1"),
    ("model is an object", output(lsblk=lsblk(disk(model={"a": 1}))), "block device 1"),
    ("type is a list", output(lsblk=lsblk(disk(type=["disk"]))), "block device 1"),
    ("children is an object", output(lsblk=lsblk(disk(children={"a": 1}))), "children"),
    ("a child is a number", output(lsblk=lsblk(disk(children=[5]))), "partition 1"),
    ("a child's size is text", output(lsblk=lsblk(disk(children=[
        {"name": "sda1", "size": "x"}]))), "partition 1"),
    ("mountpoints is a number", output(lsblk=lsblk(disk(mountpoints=5))), "block device 1"),
    ("a mount point is a number", output(lsblk=lsblk(disk(mountpoints=[5]))),
     "block device 1"),
    ("rm is a word", output(lsblk=lsblk(disk(rm="yes"))), "block device 1"),
    ("a field is 1 MB long", output(lsblk=lsblk(disk(serial="x" * 2**20))), "block device 1"),
    ("the same disk twice", output(lsblk=lsblk(disk(), disk())), "lsblk"),
    ("5000 devices", output(lsblk=lsblk(*[disk(name=f"d{n}", path=f"/dev/d{n}")
                                          for n in range(5000)])), "lsblk"),
    ("nested 100000 deep", output(lsblk='{"blockdevices": ' + "[" * 100000 + "]" * 100000
                                  + "}"), "lsblk"),
    ("truncated JSON", output(lsblk='{"blockdevices": [{"name": "sda", "ty'), "lsblk"),
    ("not UTF-8", output(lsblk=b'{"blockdevices": [\xff\xfe]}'), "lsblk"),
    ("ip link is an object", output(iplink='{"eth0": 1}'), "ip link"),
    ("a link is text", output(iplink='["eth0"]'), "ip link, link 1"),
    ("a MAC that is none", output(iplink=json.dumps([{"ifname": "eth0", "link_type": "ether",
                                                     "address": "zz:zz:zz:zz:zz:zz"}])),
     "ip link, link 1"),
    ("a MAC that is a number", output(iplink=json.dumps([{"ifname": "eth0",
                                                         "link_type": "ether",
                                                         "address": 5}])), "ip link, link 1"),
    ("mtu is a word", output(iplink=json.dumps([{"ifname": "eth0", "link_type": "ether",
                                                "address": "52:54:00:12:34:56",
                                                "mtu": "big"}])), "ip link, link 1"),
    ("ip link truncated", output(iplink='[{"ifname": "eth'), "ip link"),
    ("memory is a word", output(meminfo="MemTotal: lots kB"), "meminfo"),
    ("memory is missing", output(meminfo="MemTotal:"), "meminfo"),
    ("memory is negative", output(meminfo="MemTotal: -5 kB"), "meminfo"),
    ("memory is huge", output(meminfo="MemTotal: 99999999999999999999 kB"), "meminfo"),
    ("memory in other digits", output(meminfo="MemTotal: \u00b2\u00b3 kB"), "meminfo"),
    ("memory in another unit", output(meminfo="MemTotal: 5 pages"), "meminfo"),
    ("firmware is garbage", output(firmware="efi?"), "firmware"),
    ("host name with control characters", output(hostname="a\x1b[2Jb"), "hostname"),
    ("host name 1000 long", output(hostname="h" * 1000), "hostname"),
    ("20000 processors", output(cpuinfo="processor : 0\n" * 20000), "cpuinfo"),
    ("partx sectors with 30 digits", output(partx="/dev/sdb 1 2048 " + "9" * 30), "partx"),
    ("partx device outside /dev", output(partx="/etc/x 1 2048 4096"), "partx"),
]


def test_a_good_inventory_parses() -> None:
    found = inv.parse_output(output())
    assert found.disks[0].path == "/dev/sda" and found.disks[0].partitions[0].size == 1 << 20
    assert found.memory_bytes == 2048000 * 1024 and found.nics[0].mac == "52:54:00:12:34:56"
    assert found.tools == ["python3", "gzip"] and found.root


@pytest.mark.parametrize(("shape", "raw", "where"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_every_malformed_inventory_is_a_p2v_error(shape: str, raw: bytes, where: str) -> None:
    with pytest.raises(P2VError) as refused:
        inv.parse_output(raw)
    message = str(refused.value)
    assert message.startswith("The source's inventory cannot be read (")
    assert where in message, message
    assert len(message) < 400  # says where, without echoing what the source sent


def test_a_source_sending_too_much_is_cut_off() -> None:
    proc = subprocess.Popen(["/usr/bin/head", "-c", str(40 * 2**20), "/dev/zero"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, _err, over = p2v_ssh._collect(proc, b"", 60, 2**20)
    finally:
        proc.kill()
        proc.wait()
    assert over and len(out) == 2**20


# --- with a real source in a network namespace (root) ---------------------------------------

@pytest.fixture(scope="module")
def source_net() -> Iterator[SourceNetwork]:
    if os.geteuid() != 0:
        pytest.skip("the P2V source runs in a network namespace, which needs root")
    for program in (IP, SSHD):
        if not os.access(program, os.X_OK):
            pytest.skip(f"the P2V source needs {program} (iproute2, openssh-server)")
    try:
        with make_source_network(index=5) as network:
            yield network
    except NamespaceUnavailable as exc:
        pytest.skip(f"no network namespace can be made for the P2V source here: {exc}")


def serve(tmp_path: Path, network: SourceNetwork, key: str, **extra: Any) -> SshServer:
    root = tmp_path / "sshd"
    root.mkdir(exist_ok=True)
    server = SshServer(root=root, authorized_key=key, network=network, **extra)
    server.start()
    return server


@pytest.fixture
def source(tmp_path: Path, source_net: SourceNetwork) -> Iterator[SshServer]:
    server = serve(tmp_path, source_net, P2V_IDENTITY.public_key())
    try:
        yield server
    finally:
        server.stop()
        P2V_TRUST.unpin(server.address, server.port)
        DOM0_TRUST.unpin(server.address, server.port)


@pytest.mark.django_db
def test_p2v_logs_in_with_the_p2v_key_only(operator_client: Client, tmp_path: Path,
                                           source_net: SourceNetwork) -> None:
    """The source trusts only the dom0 key (as a dom0 does): P2V is refused."""
    server = serve(tmp_path, source_net, DOM0_IDENTITY.public_key())
    try:
        refused = post(operator_client, "/api/v1/p2v/inventory/", {"address": server.address})
        assert refused.status_code == 400
        assert "refused the appliance's P2V key" in refused.json()["detail"]
        assert "/api/v1/p2v/public-key/" in refused.json()["detail"]
        server.stop()
        server.authorized_key = P2V_IDENTITY.public_key()
        server.start()
        found = post(operator_client, "/api/v1/p2v/inventory/", {"address": server.address})
        assert found.status_code == 200, found.json()
        assert found.json()["public_key"] == P2V_IDENTITY.public_key()
    finally:
        server.stop()
        P2V_TRUST.unpin(server.address, server.port)


@pytest.mark.django_db
def test_a_p2v_fingerprint_only_touches_the_p2v_known_hosts(operator_client: Client,
                                                            source: SshServer) -> None:
    dom0_pins = read_bytes(DOM0_TRUST.path())
    fingerprint = real_fingerprint(source)
    found = post(operator_client, "/api/v1/p2v/inventory/", {
        "address": source.address, "host_key_fingerprint": fingerprint})
    assert found.status_code == 200, found.json()
    assert P2V_TRUST.pinned(source.address) == fingerprint
    assert read_bytes(DOM0_TRUST.path()) == dom0_pins
    assert DOM0_TRUST.pinned(source.address) is None


@pytest.mark.django_db
def test_a_p2v_fingerprint_for_an_enrolled_hosts_address_changes_no_pin(
        operator_client: Client, source: SshServer) -> None:
    """An operator who knows a dom0's new key cannot make the appliance trust it: P2V
    refuses the dom0's address, the dom0 pin stays, no P2V pin is made."""
    Host.objects.create(name="dom0-lab", uri=f"xen+ssh://root@{source.address}/system")
    old = DOM0_TRUST.pin(source.address, 22, OLD_KEY)
    dom0_pins = read_bytes(DOM0_TRUST.path())
    answer = post(operator_client, "/api/v1/p2v/inventory/", {
        "address": source.address, "host_key_fingerprint": real_fingerprint(source)})
    assert answer.status_code == 400 and "enrolled host dom0-lab" in answer.json()["detail"]
    assert read_bytes(DOM0_TRUST.path()) == dom0_pins
    assert DOM0_TRUST.pinned(source.address) == old
    assert P2V_TRUST.pinned(source.address) is None


@pytest.mark.django_db
def test_a_dom0_reached_through_another_address_is_refused_by_its_host_key(
        operator_client: Client, source: SshServer) -> None:
    """A dom0 enrolled at one address and reachable at another (a storage network): the
    address check cannot know, the host key the appliance trusts for it gives it away."""
    key_line, fingerprint = sshkeys.scan_host_key(source.address)
    Host.objects.create(name="dom0-elsewhere", uri="xen+ssh://root@192.0.2.99/system")
    DOM0_TRUST.pin("192.0.2.99", 22, key_line)
    try:
        answer = post(operator_client, "/api/v1/p2v/inventory/", {
            "address": source.address, "host_key_fingerprint": fingerprint})
        assert answer.status_code == 400
        assert "offers the SSH host key of an enrolled host" in answer.json()["detail"]
        assert P2V_TRUST.pinned(source.address) is None
    finally:
        DOM0_TRUST.unpin("192.0.2.99", 22)


E2E = ["cut short", "size is huge", "nested 100000 deep", "not UTF-8", "truncated JSON",
       "a MAC that is none", "memory is negative", "firmware is garbage"]


@pytest.mark.django_db
@pytest.mark.parametrize("shape", E2E)
def test_a_malformed_inventory_from_a_real_source_is_a_400(
        operator_client: Client, tmp_path: Path, source_net: SourceNetwork,
        shape: str) -> None:
    answer_file = tmp_path / "answer"
    answer_file.write_bytes(next(raw for name, raw, _ in MALFORMED if name == shape))
    server = serve(tmp_path, source_net, P2V_IDENTITY.public_key(),
                   force_command=f"cat {answer_file}")
    try:
        answer = post(operator_client, "/api/v1/p2v/inventory/", {"address": server.address})
        assert answer.status_code == 400, answer.content
        assert answer.json()["detail"].startswith("The source's inventory cannot be read (")
    finally:
        server.stop()
        P2V_TRUST.unpin(server.address, server.port)


@pytest.mark.django_db
def test_a_source_sending_gigabytes_is_a_400(operator_client: Client, tmp_path: Path,
                                             source_net: SourceNetwork) -> None:
    server = serve(tmp_path, source_net, P2V_IDENTITY.public_key(),
                   force_command="head -c 100000000 /dev/zero")
    try:
        answer = post(operator_client, "/api/v1/p2v/inventory/", {"address": server.address})
        assert answer.status_code == 400, answer.content
        assert "sent more than 16 MiB" in answer.json()["detail"]
    finally:
        server.stop()
        P2V_TRUST.unpin(server.address, server.port)


@pytest.mark.django_db
def test_an_inventory_that_turns_malformed_before_the_job_runs_is_a_job_error(
        operator_client: Client, operator_user: Any, demo: Host, tmp_path: Path,
        source_net: SourceNetwork) -> None:
    from conversions.p2v import job as p2v_job
    from xenweb.jobs.models import Job
    from xenweb.jobs.runner import run_job

    answer_file = tmp_path / "answer"
    answer_file.write_bytes(output())
    server = serve(tmp_path, source_net, P2V_IDENTITY.public_key(),
                   force_command=f"cat {answer_file}")
    try:
        fingerprint = real_fingerprint(server)
        wanted = p2v_job.Request(source=Source(server.address), fingerprint=fingerprint,
                                 disks=["/dev/sda"], host=demo,
                                 pool=demo.pools.get(name="default"), name="p2v-malformed")
        job = p2v_job.start_p2v(wanted, user=operator_user, enqueue=False)
        answer_file.write_bytes(output(lsblk='{"blockdevices": [{"size": "x"'))
        run_job(job.pk, p2v_job.p2v_body, task_id=f"test-{job.pk}", worker="test")
        job = Job.objects.get(pk=job.pk)
        assert job.state == "failed"
        assert job.error.startswith("The source's inventory cannot be read (lsblk"), job.error
    finally:
        server.stop()
        P2V_TRUST.unpin(server.address, server.port)
