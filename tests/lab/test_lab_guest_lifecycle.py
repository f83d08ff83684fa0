"""A real QEMU guest on a lab host, driven through the app's own adapter (hosts.virt):
define, start, serial console banner, pause/resume, save/restore, shutdown, undefine."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from hosts.virt import VirtError
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
        virt.start(uri, guest, allow_insecure=True)
        output = read_console_until(uri, guest, TINY_GUEST_BANNER, BOOT_TIMEOUT,
                                    allow_insecure=True)
        if TINY_GUEST_BANNER in output:
            return output
        virt.destroy(uri, guest, allow_insecure=True)
        if attempt == 2:
            pytest.fail(f"no banner on the serial console; got:\n{output[-2000:]}")
    raise AssertionError("unreachable")


def read_more(uri: str, guest: str, timeout: float = 30.0) -> str:
    """New console output (the guest prints a heartbeat while it runs)."""
    return read_console_until(uri, guest, "tick", timeout, allow_insecure=True)


def test_tiny_guest_lifecycle_through_the_adapter(lab_hosts: list[Any], tmp_path: Any) -> None:
    uri = lab_hosts[0].uri
    info = virt.define_domain(uri, tiny_spec(f"tiny-{uuid.uuid4().hex[:6]}"),
                              allow_insecure=True)
    guest = info.uuid
    try:
        assert info.state == "shutoff"
        output = boot(uri, guest)
        assert TINY_GUEST_BANNER in output

        virt.pause(uri, guest, allow_insecure=True)
        assert virt.get_domain(uri, guest, allow_insecure=True).state == "paused"
        with ConsoleStream(uri, guest, force=True, allow_insecure=True) as console:
            assert b"tick" not in console.read()  # a paused guest prints nothing
        virt.resume(uri, guest, allow_insecure=True)
        assert virt.get_domain(uri, guest, allow_insecure=True).state == "running"
        assert "tick" in read_more(uri, guest)

        saved = str(tmp_path / "tiny.save")
        virt.save(uri, guest, saved, allow_insecure=True)
        assert virt.get_domain(uri, guest, allow_insecure=True).state == "shutoff"
        virt.restore(uri, saved, allow_insecure=True)
        assert virt.get_domain(uri, guest, allow_insecure=True).state == "running"
        assert "tick" in read_more(uri, guest)  # it carries on where it was

        virt.shutdown(uri, guest, allow_insecure=True)  # ACPI power button
        assert virt.wait_for_state(uri, guest, ("shutoff",), 60, allow_insecure=True)
    finally:
        try:
            virt.destroy(uri, guest, allow_insecure=True)
        except VirtError:
            pass
        virt.undefine(uri, guest, allow_insecure=True)
    with pytest.raises(VirtError, match="not found"):
        virt.get_domain(uri, guest, allow_insecure=True)
