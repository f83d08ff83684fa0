"""What the guests code asks of a host is a capability, never "is it the lab?": a migration
skips libvirt's storage test only between hosts whose files are this machine's, and takes an
unauthenticated transport, as the graphical console does, only where the hosts allow one."""

from __future__ import annotations

import pytest

from guests.console.route import VncUnavailable, plan_route
from guests.console.sessions import GuestSessionTarget
from guests.migration.job import _request
from guests.migration.preflight import MigrationOptions, check_transport
from guests.models import Guest
from hosts.models import Host
from hosts.virt import migration as vm
from hosts.virt.graphics import VncEndpoint

LAB_URI = "qemu+tcp://127.0.0.1:{port}/system"
INSECURE_ONLY = {"allow_insecure_transport": True, "files_local": False}
FILES_ONLY = {"allow_insecure_transport": False, "files_local": True}
BOTH = {"allow_insecure_transport": True, "files_local": True}


def pair(**capabilities: bool) -> tuple[Host, Host]:
    return tuple(Host(pk=pk, name=f"lab{pk}", uri=LAB_URI.format(port=16600 + pk),
                      hypervisor_type="QEMU", is_lab=True, **capabilities)
                 for pk in (1, 2))  # type: ignore[return-value]


def unsafe(source: Host, target: Host, *, block_copy: bool = False) -> bool:
    options = MigrationOptions(mode="live", block_copy=block_copy)
    return _request(source, target, options, {}, vm.features_for("QEMU")).unsafe


def test_only_files_on_this_machine_skip_libvirts_storage_check() -> None:
    assert unsafe(*pair(**BOTH))
    assert unsafe(*pair(**FILES_ONLY))
    assert not unsafe(*pair(**INSECURE_ONLY))
    assert not unsafe(*pair(**BOTH), block_copy=True)
    source, _ = pair(**BOTH)
    _, target = pair(**INSECURE_ONLY)
    assert not unsafe(source, target)


@pytest.mark.parametrize(("capabilities", "ok"), [(BOTH, True), (INSECURE_ONLY, True),
                                                  (FILES_ONLY, False)])
def test_an_unauthenticated_migration_transport_needs_the_transport_capability(
        capabilities: dict[str, bool], ok: bool) -> None:
    source, target = pair(**capabilities)
    guest = Guest(host=source, name="g")
    assert check_transport(guest, target, MigrationOptions()).ok is ok


def test_an_unauthenticated_migration_transport_needs_the_capability_on_both_ends() -> None:
    for allowed in ("source", "target"):
        source, target = pair(**INSECURE_ONLY)
        (target if allowed == "source" else source).allow_insecure_transport = False
        assert not check_transport(Guest(host=source, name="g"), target,
                                   MigrationOptions()).ok


@pytest.mark.parametrize(("insecure", "ok"), [(True, True), (False, False)])
def test_the_console_dials_a_tcp_host_directly_only_when_its_transport_may_be_insecure(
        insecure: bool, ok: bool) -> None:
    target = GuestSessionTarget(guest_pk=1, name="g", uuid="u", host_name="lab1",
                                host_uri=LAB_URI.format(port=16600),
                                allow_insecure_transport=insecure, is_privileged=False,
                                may_act=True)
    endpoint = VncEndpoint(name="g", state="running", active=True, has_vnc=True, port=5901,
                           listen="127.0.0.1", socket="", is_privileged=False)
    if ok:
        assert plan_route(target, endpoint).kind == "tcp"
    else:
        with pytest.raises(VncUnavailable):
            plan_route(target, endpoint)
