"""hosts.virt: URI checks, error translation, connection pool, probe and the demo host.

Plain pytest against libvirt's mock ``test`` driver; no Django, no libvirtd.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from defusedxml import ElementTree

from hosts.virt import (
    DEMO_NODE_FILE,
    HostAuthError,
    HostDriverError,
    HostProbe,
    HostUnreachable,
    VirtError,
    VirtObjectNotFound,
    VirtTarget,
    close_all,
    demo_uri,
    describe_error,
    drop_connection,
    probe,
    validate_uri,
)
from hosts.virt.connection import format_version, get_connection
from hosts.virt.demo import DEMO_GUEST_STATES
from hosts.virt.errors import translate
from tests.hangup_gate import HangUpGate

# virDomainState values
RUNNING, PAUSED, SHUTOFF = 1, 3, 5
STATE_NAMES = {RUNNING: "running", PAUSED: "paused", SHUTOFF: "shutoff"}
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


@pytest.fixture(autouse=True)
def _empty_pool() -> Iterator[None]:
    close_all()
    yield
    close_all()


@pytest.fixture
def closed_port() -> int:
    """A local TCP port nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local TCP port that accepts connections but never says a word."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()  # resets the pending connections: the stuck worker finishes


# --- probe -----------------------------------------------------------------


def test_probe_demo_host() -> None:
    result = probe(VirtTarget(demo_uri()))

    assert isinstance(result, HostProbe)
    assert result.uri == demo_uri()
    # The test driver always reports the name of the machine running libvirt.
    assert result.hostname
    assert result.hostname.split(".")[0] == socket.gethostname().split(".")[0]
    assert result.hypervisor_type == "TEST"
    assert result.hypervisor_version == "0.0.2"
    assert VERSION_RE.match(result.libvirt_version)
    assert result.arch == "x86_64"
    assert result.cpus == 16  # 2 sockets x 4 cores x 2 threads
    assert result.memory_mib == 64 * 1024
    assert result.domain_count == len(DEMO_GUEST_STATES) == 8


def test_probe_default_test_host() -> None:
    result = probe(VirtTarget("test:///default"))

    assert result.hypervisor_type == "TEST"
    assert result.domain_count == 1
    assert result.arch == "i686"
    assert result.cpus == 16
    assert result.memory_mib == 3 * 1024


def test_probe_result_is_frozen() -> None:
    result = probe(VirtTarget("test:///default"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.cpus = 1  # type: ignore[misc]


def test_probe_does_not_use_the_pool() -> None:
    pooled = get_connection(VirtTarget("test:///default"))
    probe(VirtTarget("test:///default"))
    assert get_connection(VirtTarget("test:///default")) is pooled
    assert pooled.isAlive() == 1


@pytest.mark.parametrize(
    ("number", "text"),
    [(4017000, "4.17.0"), (9000000, "9.0.0"), (2, "0.0.2"), (8002001, "8.2.1"), (0, "unknown")],
)
def test_format_version(number: int, text: str) -> None:
    assert format_version(number) == text


# --- URI validation ----------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "test:///default",
        "xen:///system",
        "xen:///",
        "qemu:///system",
        "xen+ssh://root@xen1.example.com/system",
        "xen+ssh://root@xen1.example.com:2222/system?keyfile=/etc/xenweb/id_ed25519",
        "qemu+ssh://admin@[2001:db8::1]/system",
        "xen+tls://xen2.example.com/system",
        "qemu+tls://kvm.example.com/system?pkipath=/etc/xenweb/pki",
    ],
)
def test_valid_uris_pass(uri: str) -> None:
    assert validate_uri(uri) == uri


def test_validate_uri_lowercases_the_scheme_only() -> None:
    assert validate_uri("XEN+SSH://root@Xen1/system") == "xen+ssh://root@Xen1/system"


def test_demo_uri_passes_validation() -> None:
    assert validate_uri(demo_uri()) == demo_uri()


def test_insecure_transport_needs_explicit_permission() -> None:
    uri = "qemu+tcp://kvm.example.com/system"
    with pytest.raises(HostDriverError) as excinfo:
        validate_uri(uri)
    message = str(excinfo.value)
    assert "unauthenticated" in message
    assert "refused" in message
    assert "qemu+ssh" in message and "qemu+tls" in message
    assert validate_uri(uri, allow_insecure=True) == uri
    assert validate_uri("xen+tcp://xen1/system", allow_insecure=True)


def test_a_target_carries_the_transport_policy_to_every_check() -> None:
    uri = "QEMU+tcp://kvm.example.com/system"
    with pytest.raises(HostDriverError, match="unauthenticated") as refused:
        VirtTarget(uri).checked_uri()
    with pytest.raises(HostDriverError) as by_validate:
        validate_uri(uri)
    assert str(refused.value) == str(by_validate.value)
    assert VirtTarget(uri, allow_insecure=True).checked_uri() == uri.replace("QEMU", "qemu")
    with pytest.raises(HostDriverError, match="unauthenticated"):
        get_connection(VirtTarget(uri))
    with pytest.raises(HostDriverError, match="unauthenticated"):
        probe(VirtTarget(uri))


def test_a_target_is_a_value_made_without_checks() -> None:
    target = VirtTarget("not a uri")  # checked when the adapter connects, not here
    assert target == VirtTarget("not a uri", allow_insecure=False)
    assert target != VirtTarget("not a uri", allow_insecure=True)
    assert len({target, VirtTarget("not a uri")}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.allow_insecure = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("qemu+tcp://127.0.0.1/system", "unauthenticated, unencrypted transport"),
        ("xen+tcp://xen1/system", "use xen+ssh or xen+tls"),
        ("ftp://x", "Unsupported URI scheme 'ftp'"),
        ("lxc:///system", "Unsupported URI scheme 'lxc'"),
        ("xen1.example.com", "is not a libvirt URI"),
        ("", "empty"),
        ("test:///nonexistent.xml", "'/nonexistent.xml' does not exist"),
        ("test:///tmp", "does not exist or is not a file"),
        ("test:///", "names no node file"),
        ("test://localhost/default", "local only"),
        ("test:///default?x=1", "takes no parameters"),
        ("xen+ssh://xen 1/system", "whitespace or a control character (' '"),
        ("xen+ssh://xen1/system\n", "whitespace or a control character ('\\n'"),
        ("xen+ssh://xen1/sys\x00tem", "control character"),
        (" xen:///system", "whitespace"),
        ("xen+ssh://xen1.exämple.com/system", "non-ASCII"),
        ("xen+ssh:///system", "names no host"),
        ("xen://xen1/system", "names a host but no transport"),
        ("qemu:///embed", "expects the path /session or /system"),
        ("xen:///session", "expects the path / or /system"),
        ("xen+ssh://root:hunter2@xen1/system", "Do not put passwords"),
        ("xen+ssh://xen1:99999/system", "not a valid URI"),
        ("xen+ssh://xen1/system?command=/bin/sh", "Unsupported URI parameter 'command'"),
        ("xen+tls://xen1/system?no_verify=1", "turns off certificate checks"),
        ("test:///default#frag", "fragment"),
    ],
)
def test_bad_uris_are_refused_with_a_clear_message(uri: str, fragment: str) -> None:
    with pytest.raises(HostDriverError) as excinfo:
        validate_uri(uri)
    assert fragment in str(excinfo.value)
    assert excinfo.value.message == str(excinfo.value)


def test_password_is_not_repeated_in_the_error() -> None:
    with pytest.raises(HostDriverError) as excinfo:
        validate_uri("xen+ssh://root:hunter2@xen1:99999/system?command=x")
    assert "hunter2" not in str(excinfo.value)
    assert "hunter2" not in repr(vars(excinfo.value))


@pytest.mark.parametrize(
    "uri", ["qemu+tcp://127.0.0.1:1/system", "ftp://x", "test:///nonexistent.xml", "a b"]
)
def test_probe_and_pool_validate_before_connecting(uri: str) -> None:
    with pytest.raises(HostDriverError):
        probe(VirtTarget(uri))
    with pytest.raises(HostDriverError):
        get_connection(VirtTarget(uri))


# --- connection failures -------------------------------------------------------


def test_refused_connection_is_unreachable(closed_port: int) -> None:
    uri = f"qemu+tcp://127.0.0.1:{closed_port}/system"
    with pytest.raises(HostUnreachable) as excinfo:
        probe(VirtTarget(uri, allow_insecure=True))
    message = str(excinfo.value)
    assert "Cannot reach host '127.0.0.1'" in message
    assert "refused" in message
    assert "libvirtd" in message
    assert excinfo.value.uri == uri
    assert excinfo.value.detail  # libvirt's own text is kept for logs


def test_refused_connection_port_1_from_the_brief() -> None:
    with pytest.raises(HostUnreachable, match="refused"):
        probe(VirtTarget("qemu+tcp://127.0.0.1:1/system", allow_insecure=True))


def test_refused_ssh_connection_names_ssh(closed_port: int) -> None:
    with pytest.raises(HostUnreachable) as excinfo:
        probe(VirtTarget(f"xen+ssh://root@127.0.0.1:{closed_port}/system"))
    assert "over SSH: connection refused" in str(excinfo.value)


def test_ssh_server_hanging_up_is_unreachable_and_tried_once_more() -> None:
    """libssh words it "no connection driver available for SSH session handshake failed",
    which is no missing driver: the SSH server closed the connection (sshd beyond its
    MaxStartups does so at random), so the app tries once more, then says what happened."""
    with HangUpGate(hang_ups=10) as gate:
        with pytest.raises(HostUnreachable) as excinfo:
            probe(VirtTarget(f"xen+ssh://root@127.0.0.1:{gate.port}/system"), timeout=30)
    assert str(excinfo.value) == (
        "Cannot reach host '127.0.0.1' over SSH: the connection was closed during the SSH "
        "handshake (is it an SSH server on that port, and is it turning new connections "
        "away: sshd's MaxStartups, a firewall?)"
    )
    assert "handshake failed" in excinfo.value.detail
    assert gate.accepted == 3  # libvirt, the app's look at the TCP port, libvirt again



def test_unresolvable_host_name_is_a_dns_error() -> None:
    # .invalid never resolves (RFC 6761).
    with pytest.raises(HostUnreachable) as excinfo:
        probe(VirtTarget("qemu+tcp://no-such-host.invalid/system", allow_insecure=True))
    assert str(excinfo.value) == "Host name 'no-such-host.invalid' could not be resolved (DNS)"


def test_missing_libvirtd_socket_is_unreachable(tmp_path: Path) -> None:
    socket_path = tmp_path / "libvirt-sock"
    with pytest.raises(HostUnreachable) as excinfo:
        probe(VirtTarget(f"qemu:///system?socket={socket_path}"))
    assert "is libvirtd running?" in str(excinfo.value)


def test_silent_host_times_out(silent_port: int) -> None:
    uri = f"qemu+tcp://127.0.0.1:{silent_port}/system"
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as excinfo:
        probe(VirtTarget(uri, allow_insecure=True), timeout=1.0)
    assert time.monotonic() - started < 5
    assert "timed out after 1 s" in str(excinfo.value)


def test_pool_open_times_out_too(silent_port: int) -> None:
    with pytest.raises(HostUnreachable, match=r"timed out after 0\.5 s"):
        get_connection(
            VirtTarget(f"qemu+tcp://127.0.0.1:{silent_port}/system", allow_insecure=True),
            timeout=0.5,
        )


def test_failed_authentication(tmp_path: Path) -> None:
    node_file = tmp_path / "auth-node.xml"
    node_file.write_text(
        '<node><auth><user password="secret">admin</user></auth></node>', encoding="utf-8"
    )
    with pytest.raises(HostAuthError) as excinfo:
        probe(VirtTarget(f"test://{node_file}"))
    assert str(excinfo.value).startswith(f"Authentication to 'test://{node_file}' failed")


def test_broken_node_file_is_a_driver_error(tmp_path: Path) -> None:
    node_file = tmp_path / "broken.xml"
    node_file.write_text("<node><domain type='test'><name>x</name></node>", encoding="utf-8")
    with pytest.raises(HostDriverError) as excinfo:
        probe(VirtTarget(f"test://{node_file}"))
    message = str(excinfo.value)
    assert "test driver could not load the node file" in message
    assert "tag mismatch" in message
    assert "\n" not in message


def test_missing_object_translates_to_not_found() -> None:
    uri = demo_uri()
    conn = get_connection(VirtTarget(uri))
    with pytest.raises(Exception) as excinfo:  # a libvirt error: tests do not import libvirt
        conn.lookupByName("no-such-guest")
    error = translate(excinfo.value, uri)  # type: ignore[arg-type]
    assert isinstance(error, VirtObjectNotFound)
    assert str(error).startswith("Guest not found on ")
    assert describe_error(excinfo.value, uri) == str(error)

    with pytest.raises(Exception) as excinfo:
        conn.storagePoolLookupByName("no-such-pool")
    assert "Storage pool not found" in describe_error(excinfo.value, uri)


def test_operation_errors_mention_the_action() -> None:
    uri = demo_uri()
    conn = get_connection(VirtTarget(uri))
    with pytest.raises(Exception) as excinfo:
        conn.lookupByName("web01").create()  # already running
    error = translate(excinfo.value, uri, action="start guest 'web01'")  # type: ignore[arg-type]
    assert type(error).__name__ == "VirtOperationError"
    # The host is named as enrolled once a Host row has named it in this process (whatever
    # name an earlier test gave the demo URI), by its URI before; the cause is in words.
    assert re.match(rf"Could not start guest 'web01' on (host '[^']+'|'{re.escape(uri)}'): "
                    "the guest is already running.$", str(error)), str(error)


def test_errors_survive_pickling() -> None:
    error = HostUnreachable("Cannot reach host 'x'", uri="xen+ssh://x/system", code=38, detail="d")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own data
    assert type(copy) is HostUnreachable
    assert (copy.message, copy.uri, copy.code, copy.detail) == (
        "Cannot reach host 'x'",
        "xen+ssh://x/system",
        38,
        "d",
    )
    assert str(copy) == "Cannot reach host 'x'"


def test_describe_error_on_other_exceptions() -> None:
    assert describe_error(HostAuthError("nope")) == "nope"
    assert describe_error(ValueError("bad value")) == "bad value"
    assert describe_error(RuntimeError()) == "RuntimeError"
    assert issubclass(HostAuthError, VirtError)


# --- connection pool -----------------------------------------------------------


def test_pool_reuses_the_open_connection() -> None:
    first = get_connection(VirtTarget(demo_uri()))
    assert get_connection(VirtTarget(demo_uri())) is first
    assert first.isAlive() == 1


def test_pool_is_keyed_by_uri() -> None:
    assert get_connection(VirtTarget(demo_uri())) is not get_connection(VirtTarget("test:///default"))


def test_pool_reopens_a_dead_connection() -> None:
    first = get_connection(VirtTarget(demo_uri()))
    first.close()  # simulate a lost connection
    second = get_connection(VirtTarget(demo_uri()))
    assert second is not first
    assert second.isAlive() == 1
    assert get_connection(VirtTarget(demo_uri())) is second


def test_close_all_and_drop_connection() -> None:
    first = get_connection(VirtTarget(demo_uri()))
    close_all()
    second = get_connection(VirtTarget(demo_uri()))
    assert second is not first
    drop_connection(demo_uri())
    assert get_connection(VirtTarget(demo_uri())) is not second


def test_pool_is_thread_safe() -> None:
    barrier = threading.Barrier(8)

    def grab(_: int) -> int:
        barrier.wait()
        return id(get_connection(VirtTarget(demo_uri())))

    with ThreadPoolExecutor(max_workers=8) as executor:
        ids = set(executor.map(grab, range(8)))
    assert len(ids) == 1


# --- the demo host ---------------------------------------------------------------


def _domain_xml(conn: object, name: str) -> ElementTree.Element:  # type: ignore[name-defined]
    return ElementTree.fromstring(conn.lookupByName(name).XMLDesc())  # type: ignore[attr-defined]


def test_demo_uri_points_at_the_node_file() -> None:
    uri = demo_uri()
    assert uri.startswith("test:///")
    assert Path(unquote(urlsplit(uri).path)) == DEMO_NODE_FILE
    assert DEMO_NODE_FILE.is_absolute()
    assert DEMO_NODE_FILE.is_file()


def test_demo_guests_and_states() -> None:
    conn = get_connection(VirtTarget(demo_uri()))
    states = {dom.name(): STATE_NAMES[dom.state()[0]] for dom in conn.listAllDomains(0)}
    assert states == DEMO_GUEST_STATES
    assert states["Domain-0"] == "running"
    assert states["mail01"] == "shutoff"
    assert states["build01"] == "paused"
    assert {"fw-external", "fw-internal", "web01", "db01", "win2019"} <= {
        name for name, state in states.items() if state == "running"
    }


def test_demo_domain0() -> None:
    conn = get_connection(VirtTarget(demo_uri()))
    dom0 = conn.lookupByName("Domain-0")
    assert dom0.UUIDString() == "00000000-0000-0000-0000-000000000000"
    # The test driver numbers running domains from 1 in file order: no id 0.
    assert dom0.ID() == 1
    assert dom0.info()[1] == 4 * 1024 * 1024  # KiB
    xml = _domain_xml(conn, "Domain-0")
    assert xml.findtext("os/type") == "linux"  # a PV domain, as libxl reports it


def test_demo_guest_kinds_and_devices() -> None:
    conn = get_connection(VirtTarget(demo_uri()))
    volume_paths = {
        volume.path() for pool in conn.listAllStoragePools(0) for volume in pool.listAllVolumes(0)
    }
    for name in DEMO_GUEST_STATES:
        xml = _domain_xml(conn, name)
        # Same XML as a real Xen (libxl) host: the test driver accepts type='xen',
        # and libvirt reads a PV guest's os type back as 'linux'.
        assert xml.get("type") == "xen", name
        os_type = xml.find("os/type")
        assert os_type is not None, name
        expected = ("hvm", "xenfv") if name == "win2019" else ("linux", "xenpv")
        assert (os_type.text, os_type.get("machine")) == expected, name
        assert os_type.get("arch") == "x86_64", name
        for mac in xml.iterfind("devices/interface/mac"):
            assert mac.get("address", "").startswith("00:16:3e:"), name
        for source in xml.iterfind("devices/disk/source"):
            assert source.get("file") in volume_paths, name
        if name != "Domain-0":
            assert xml.findall("devices/interface"), name
            assert xml.findall("devices/disk"), name

    win = _domain_xml(conn, "win2019")
    graphics = win.find("devices/graphics")
    assert graphics is not None
    assert graphics.get("type") == "vnc"
    assert graphics.get("port") == "5900"
    firewalls = [_domain_xml(conn, name) for name in ("fw-external", "fw-internal")]
    for fw in firewalls:
        assert len(fw.findall("devices/interface")) == 2


def test_demo_networks() -> None:
    conn = get_connection(VirtTarget(demo_uri()))
    networks = {net.name(): net for net in conn.listAllNetworks(0)}
    assert set(networks) == {"xenbr0", "internal", "default"}
    xenbr0 = ElementTree.fromstring(networks["xenbr0"].XMLDesc(0))
    forward = xenbr0.find("forward")
    assert forward is not None
    assert forward.get("mode") == "bridge"
    assert networks["xenbr0"].bridgeName() == "xenbr0"
    internal = ElementTree.fromstring(networks["internal"].XMLDesc(0))
    assert internal.find("forward") is None  # isolated
    assert all(net.isActive() == 1 for net in networks.values())


def test_demo_storage_pools() -> None:
    conn = get_connection(VirtTarget(demo_uri()))
    pools = {pool.name(): pool for pool in conn.listAllStoragePools(0)}
    assert set(pools) == {"default", "iso"}
    default = ElementTree.fromstring(pools["default"].XMLDesc(0))
    assert default.get("type") == "dir"
    assert default.findtext("target/path") == "/var/lib/xen/images"
    assert set(pools["default"].listVolumes()) == {
        "web01.img",
        "db01-root.img",
        "db01-data.img",
        "mail01.img",
        "fw-external.img",
        "fw-internal.img",
        "build01.img",
        "win2019.qcow2",
    }
    assert all(name.endswith(".iso") for name in pools["iso"].listVolumes())
    # The test driver gives every pool 100 GiB; the demo leaves room for new volumes.
    _state, capacity, _allocation, available = pools["default"].info()
    assert capacity == 100 * 1024**3
    assert available >= 20 * 1024**3


def test_demo_node_info() -> None:
    conn = get_connection(VirtTarget(demo_uri()))
    model, memory_mib, cpus, mhz, nodes, sockets, cores, threads = conn.getInfo()
    assert (model, memory_mib, cpus, mhz) == ("x86_64", 65536, 16, 3000)
    assert (nodes, sockets, cores, threads) == (1, 2, 4, 2)
