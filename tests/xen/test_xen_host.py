"""The product against a real Xen 4.17 dom0 (Debian 12, libvirt's libxl driver), booted under
QEMU with TCG: enrolment over xen+ssh with a pinned host key, capabilities (PV only: the
no-VT-x case), Domain-0 protected, HVM refused, and a PV guest's life through the API."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest
from django.test import Client

from guests.inventory import reconcile_host
from guests.models import Guest
from hosts.models import Host
from hosts.services import HostError, enrol_host
from hosts.virt import VirtError, VirtTarget, probe
from hosts.virt import domains as virt
from hosts.virt.capabilities import HVM_UNAVAILABLE
from hosts.virt.console import read_console_until
from hosts.virt.errors import LIBXL_CREATE_FAILED, LIBXL_LOG
from lab.tinyguest import TINY_GUEST_BANNER, tiny_guest_cmdline
from lab.xen.manager import TINY_GUEST_DIR, TINY_GUEST_KERNEL, XenHost
from lab.xen.register import register_xen_host
from lab.xen.remote import run_on
from tests.hangup_gate import HangUpGate
from tests.xen.helpers import (
    INITRD_FILE,
    KERNEL_FILE,
    create_pv_guest,
    post,
    remove_quietly,
)
from xenweb.appliance.sshkeys import (
    fingerprint,
    pin_host_key,
    pinned_fingerprint,
    scan_host_key,
    unpin_host_key,
)

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(900)]

HOST = "127.0.0.1"


def other_key_line(tmp_path: Path, port: int) -> str:
    key = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True, capture_output=True, timeout=30)
    return f"[{HOST}]:{port} {key.with_suffix('.pub').read_text().strip()}"


@pytest.fixture
def enrolled(xen_host: XenHost) -> Host:
    host, _ = register_xen_host(xen_host)
    return host


def test_enrolment_over_ssh_pins_the_host_key(xen_host: XenHost) -> None:
    unpin_host_key(HOST, xen_host.ssh_port)
    host, created = register_xen_host(xen_host)
    assert created
    assert host.uri == f"xen+ssh://root@{HOST}:{xen_host.ssh_port}/system"
    # A lab host, but reached over authenticated SSH and with its files in the dom0.
    assert host.is_lab and not host.allow_insecure_transport and not host.files_local
    assert pinned_fingerprint(HOST, xen_host.ssh_port) == xen_host.host_key_fingerprint
    assert host.hypervisor_type == "Xen"
    assert host.hypervisor_version.startswith("4.17.")
    # The transport is SSH with the appliance's key: a plain probe (no lab flag) works too.
    assert probe(VirtTarget(host.uri), timeout=30).hypervisor_type == "Xen"


def test_first_contact_without_a_fingerprint_is_trusted_and_pinned(xen_host: XenHost) -> None:
    unpin_host_key(HOST, xen_host.ssh_port)
    host = enrol_host(name="xen-tofu", uri=xen_host.uri, user=None)
    assert host.hypervisor_type == "Xen"
    assert pinned_fingerprint(HOST, xen_host.ssh_port) == xen_host.host_key_fingerprint


def test_wrong_confirmed_fingerprint_is_refused(xen_host: XenHost) -> None:
    wrong = "SHA256:" + "A" * 43
    with pytest.raises(HostError) as excinfo:
        enrol_host(name="xen-wrong", uri=xen_host.uri, user=None, is_lab=True,
                   host_key_fingerprint=wrong)
    assert str(excinfo.value) == (
        f"host key of [{HOST}]:{xen_host.ssh_port} does not match the confirmed fingerprint: "
        f"expected {wrong}, got {xen_host.host_key_fingerprint}"
    )
    assert not Host.objects.filter(uri=xen_host.uri).exists()


def test_changed_host_key_is_refused(xen_host: XenHost, tmp_path: Path) -> None:
    port = xen_host.ssh_port
    real_line, real = scan_host_key(HOST, port)
    assert real == xen_host.host_key_fingerprint
    other = other_key_line(tmp_path, port)
    pin_host_key(HOST, port, other)
    try:
        with pytest.raises(HostError) as excinfo:
            enrol_host(name="xen-changed", uri=xen_host.uri, user=None, is_lab=True)
        assert str(excinfo.value) == (
            f"host key of [{HOST}]:{port} changed: expected {fingerprint(other)}, got {real}"
        )
        assert not Host.objects.filter(uri=xen_host.uri).exists()
        # libvirt itself (libssh, strict known_hosts) refuses the host too.
        with pytest.raises(VirtError):
            probe(VirtTarget(xen_host.uri), timeout=30)
    finally:
        pin_host_key(HOST, port, real_line)


def test_an_ssh_hang_up_during_the_handshake_is_tried_once_more(xen_host: XenHost) -> None:
    """dom0's sshd turning the first connection away (as beyond its MaxStartups) costs the
    operator nothing: the app connects on its second try."""
    real_line, _ = scan_host_key(HOST, xen_host.ssh_port)
    with HangUpGate(hang_ups=1, target=(HOST, xen_host.ssh_port)) as gate:
        pin_host_key(HOST, gate.port, real_line)
        try:
            answer = probe(VirtTarget(f"xen+ssh://root@{HOST}:{gate.port}/system"), timeout=120)
        finally:
            unpin_host_key(HOST, gate.port)
    assert answer.hypervisor_type == "Xen"
    assert gate.accepted == 3  # cut off, the app's look at the TCP port, the second try


def test_a_guest_libxl_refuses_says_where_libxl_tells_why(
    enrolled: Host, admin_client: Client, xen_host: XenHost
) -> None:
    """libvirt passes on only "libxenlight failed to create new domain"; the answer says
    where on the host libxl wrote its reason. (The kernel is a boot file when the guest is
    defined, and gone from dom0 when it starts.)"""
    name = f"nokernel-{uuid.uuid4().hex[:6]}"
    gone = f"{TINY_GUEST_DIR}/no-such-kernel"
    run_on(xen_host, ["cp", TINY_GUEST_KERNEL, gone])
    try:
        created = post(admin_client, "/api/v1/guests/", {
            "name": name, "host": enrolled.pk, "type": "pv", "memory_mib": 128,
            "kernel_file": "no-such-kernel", "initrd_file": INITRD_FILE,
        })
    finally:
        run_on(xen_host, ["rm", "-f", gone])
    assert created.status_code == 201, created.json()
    guest = Guest.objects.get(pk=created.json()["id"])
    try:
        started = post(admin_client, f"/api/v1/guests/{guest.pk}/start/")
        assert started.status_code == 409, started.json()
        detail = started.json()["detail"]
        assert LIBXL_CREATE_FAILED in detail
        assert f"libxl's reason is in {LIBXL_LOG} on the host" in detail
        assert "no-such-kernel" in run_on(xen_host, ["tail", "-n", "30", LIBXL_LOG]).stdout
    finally:
        remove_quietly(enrolled, str(guest.uuid))


def test_capabilities_are_xen_417_pv_only(enrolled: Host) -> None:
    from hosts.capabilities import refresh_capabilities

    caps = refresh_capabilities(enrolled)
    assert caps["guest_types"] == ["xen"]  # PV only: Xen reports no hvm without VT-x
    assert enrolled.hypervisor_version.startswith("4.17.")


def test_domain0_is_privileged_and_protected(enrolled: Host, admin_client: Client) -> None:
    reconcile_host(enrolled)
    dom0 = Guest.objects.get(host=enrolled, name="Domain-0")
    assert dom0.is_privileged
    assert dom0.state == "running"
    for action in ("shutdown", "destroy"):
        answer = post(admin_client, f"/api/v1/guests/{dom0.pk}/{action}/")
        assert answer.status_code == 409, answer.json()
        assert "privileged management domain" in answer.json()["detail"]
    names = {d.name for d in virt.list_domains(VirtTarget(enrolled.uri, allow_insecure=True))}
    assert "Domain-0" in names


def test_hvm_guest_is_refused_and_nothing_created(enrolled: Host, admin_client: Client) -> None:
    name = f"hvm-{uuid.uuid4().hex[:6]}"
    before = Guest.objects.count()
    answer = post(admin_client, "/api/v1/guests/", {
        "name": name, "host": enrolled.pk, "type": "hvm", "memory_mib": 256,
    })
    assert answer.status_code == 400, answer.json()
    assert answer.json()["detail"] == HVM_UNAVAILABLE
    assert HVM_UNAVAILABLE == (
        "HVM guest support is unavailable: is VT/AMD-V supported by your CPU and enabled in "
        "your BIOS?"
    )
    assert Guest.objects.count() == before
    domains = virt.list_domains(VirtTarget(enrolled.uri, allow_insecure=True))
    assert name not in {d.name for d in domains}


def test_pv_guest_lifecycle_through_the_api(enrolled: Host, admin_client: Client) -> None:
    name = f"pv-{uuid.uuid4().hex[:6]}"
    began = time.monotonic()
    created = post(admin_client, "/api/v1/guests/", {
        "name": name, "host": enrolled.pk, "type": "pv", "memory_mib": 256,
        "kernel_file": KERNEL_FILE, "initrd_file": INITRD_FILE,
        "cmdline": tiny_guest_cmdline(console="hvc0"),
    })
    assert created.status_code == 201, created.json()
    guest = Guest.objects.get(pk=created.json()["id"])
    base = f"/api/v1/guests/{guest.pk}"
    try:
        started = post(admin_client, f"{base}/start/")
        assert started.status_code == 200, started.json()
        assert started.json()["state"] == "running"
        print(f"PV guest defined and started in {time.monotonic() - began:.1f} s")
        console = read_console_until(VirtTarget(enrolled.uri, allow_insecure=True),
                                     str(guest.uuid), TINY_GUEST_BANNER, 180)
        assert TINY_GUEST_BANNER in console, console[-500:]
        assert post(admin_client, f"{base}/pause/").json()["state"] == "paused"
        assert post(admin_client, f"{base}/resume/").json()["state"] == "running"
        destroyed = post(admin_client, f"{base}/destroy/")
        assert destroyed.status_code == 200, destroyed.json()
        assert destroyed.json()["state"] == "shutoff"
    finally:
        try:
            virt.destroy(VirtTarget(enrolled.uri, allow_insecure=True), str(guest.uuid))
        except VirtError:
            pass
    deleted = admin_client.delete(f"{base}/?confirm={name}")
    assert deleted.status_code == 204, deleted.content
    domains = virt.list_domains(VirtTarget(enrolled.uri, allow_insecure=True))
    assert name not in {d.name for d in domains}


def test_graphs_of_the_dom0_and_its_pv_guest(enrolled: Host, admin_client: Client) -> None:
    """libvirt's libxl driver has no bulk stats or host CPU counters: the sampler reads each
    domain by itself and the host's busy time from its domains (issue 22)."""
    from inventory.metrics import sample_host

    guest = create_pv_guest(admin_client, enrolled, "graphs")
    try:
        assert post(admin_client, f"/api/v1/guests/{guest.pk}/start/").status_code == 200
        assert sample_host(enrolled) == 2  # Domain-0 and the guest
        time.sleep(3)
        assert sample_host(enrolled) == 2
        series = admin_client.get(f"/api/v1/guests/{guest.pk}/metrics/?minutes=5").json()
        assert len(series["t"]) == 1, series
        cpu = series["series"]["cpu_percent"][0]
        assert cpu is not None and cpu >= 0, series
        assert 150 <= series["series"]["memory_mib"][0] <= 200, series
        for counter in ("disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps"):
            assert series["series"][counter][0] is not None, (counter, series)
        host_series = admin_client.get(f"/api/v1/hosts/{enrolled.pk}/metrics/").json()
        assert len(host_series["t"]) == 1, host_series
        assert 0 < host_series["series"]["cpu_percent"][0] <= 100, host_series
        assert 0 < host_series["series"]["memory_used_percent"][0] <= 100, host_series
    finally:
        remove_quietly(enrolled, str(guest.uuid))
