"""A real QEMU guest on a lab host, driven through the app's own adapter (hosts.virt):
define, start, serial console banner, pause/resume, save/restore, shutdown, undefine."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from hosts.virt import VirtError, VirtTarget
from hosts.virt import domains as virt
from hosts.virt.console import ConsoleStream, read_console_until
from hosts.virt.domain_xml import HVM, DomainSpec
from lab.tinyguest import TINY_GUEST_BANNER, ensure_tiny_guest, tiny_guest_cmdline

BOOT_TIMEOUT = 90.0


def tiny_spec(name: str, dirty_mib: int = 0) -> DomainSpec:
    image = ensure_tiny_guest()
    return DomainSpec(
        name=name, domain_type="qemu", os_type=HVM, memory_mib=160, vcpus=1,
        kernel=str(image.kernel), initrd=str(image.initrd),
        cmdline=tiny_guest_cmdline(dirty_mib=dirty_mib),
    )


def boot(uri: str, guest: str) -> str:
    """Start and read the console until the banner; one retry of a failed boot."""
    for attempt in (1, 2):
        virt.start(VirtTarget(uri, allow_insecure=True), guest)
        output = read_console_until(VirtTarget(uri, allow_insecure=True),
                                    guest, TINY_GUEST_BANNER, BOOT_TIMEOUT)
        if TINY_GUEST_BANNER in output:
            return output
        virt.destroy(VirtTarget(uri, allow_insecure=True), guest)
        if attempt == 2:
            pytest.fail(f"no banner on the serial console; got:\n{output[-2000:]}")
    raise AssertionError("unreachable")


def read_more(uri: str, guest: str, timeout: float = 30.0) -> str:
    """New console output (the guest prints a heartbeat while it runs)."""
    return read_console_until(VirtTarget(uri, allow_insecure=True), guest, "tick", timeout)


def test_tiny_guest_lifecycle_through_the_adapter(lab_hosts: list[Any], tmp_path: Any) -> None:
    uri = lab_hosts[0].uri
    info = virt.define_domain(VirtTarget(uri, allow_insecure=True),
                              tiny_spec(f"tiny-{uuid.uuid4().hex[:6]}"))
    guest = info.uuid
    try:
        assert info.state == "shutoff"
        output = boot(uri, guest)
        assert TINY_GUEST_BANNER in output

        virt.pause(VirtTarget(uri, allow_insecure=True), guest)
        assert virt.get_domain(VirtTarget(uri, allow_insecure=True), guest).state == "paused"
        with ConsoleStream(VirtTarget(uri, allow_insecure=True), guest, force=True) as console:
            assert b"tick" not in console.read()  # a paused guest prints nothing
        virt.resume(VirtTarget(uri, allow_insecure=True), guest)
        assert virt.get_domain(VirtTarget(uri, allow_insecure=True), guest).state == "running"
        assert "tick" in read_more(uri, guest)

        saved = str(tmp_path / "tiny.save")
        virt.save(VirtTarget(uri, allow_insecure=True), guest, saved)
        assert virt.get_domain(VirtTarget(uri, allow_insecure=True), guest).state == "shutoff"
        virt.restore(VirtTarget(uri, allow_insecure=True), saved)
        assert virt.get_domain(VirtTarget(uri, allow_insecure=True), guest).state == "running"
        assert "tick" in read_more(uri, guest)  # it carries on where it was

        virt.shutdown(VirtTarget(uri, allow_insecure=True), guest)  # ACPI power button
        assert virt.wait_for_state(VirtTarget(uri, allow_insecure=True), guest, ("shutoff",), 60)
    finally:
        try:
            virt.destroy(VirtTarget(uri, allow_insecure=True), guest)
        except VirtError:
            pass
        virt.undefine(VirtTarget(uri, allow_insecure=True), guest)
    with pytest.raises(VirtError, match="not found"):
        virt.get_domain(VirtTarget(uri, allow_insecure=True), guest)
