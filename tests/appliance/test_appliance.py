"""The appliance image as a user meets it: booted from the image under QEMU (SeaBIOS, the
image's GRUB, Debian's stock Xen 4.17), its console read for the address, setup token and
certificate fingerprint, the wizard completed over HTTPS through nginx with the certificate
pinned to that fingerprint, then rebooted; a second machine from the same image shares no
secret with the first. The tests run in file order on one booted machine."""

from __future__ import annotations

import re

import pytest

from lab.appliance.boot import BootedAppliance
from lab.appliance.image import ApplianceImage
from tests.appliance.conftest import FIGURES, Booted, boot_appliance
from tests.appliance.https import PinnedClient

STRONG = "Appliance-passphrase-2026"
# What two machines made from one image must not share (sha256 of each, read over SSH).
SECRETS = (
    "/etc/xenweb/xenweb.env", "/etc/xenweb/redis-password", "/etc/xenweb/tls/key.pem",
    "/etc/xenweb/tls/cert.pem", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key",
    "/etc/machine-id",
)


def secrets_of(machine: BootedAppliance) -> dict[str, str]:
    out = machine.ssh("sha256sum " + " ".join(SECRETS))
    found = {path: digest for digest, path in (line.split() for line in out.splitlines())}
    assert set(found) == set(SECRETS), out
    return found


def test_first_boot_console_shows_address_token_and_fingerprint(appliance: Booted) -> None:
    machine, screen = appliance.machine, appliance.screen
    console = machine.console()
    # The image's own boot loader and Debian's stock hypervisor, nothing from QEMU's
    # command line.
    assert "xenweb appliance (Debian 12, Xen 4.17)" in console
    assert re.search(r"Xen version 4\.17", console)
    assert screen.url == "https://10.0.2.15/"  # QEMU's DHCP, on the bridge
    assert len(screen.token) >= 20 and "set-up is done" not in screen.token
    assert machine.ssh("cat /var/lib/xenweb/setup-token").strip() == screen.token
    # The root file system grew to its (bigger) disk; xenbr0 holds the first NIC.
    size = int(machine.ssh("findmnt -bno SIZE /").strip())
    assert size > 12 * 1024**3, size
    bridge = machine.ssh("ip -br link show master xenbr0; ip -4 -br addr show xenbr0")
    assert "10.0.2.15/24" in bridge and re.search(r"^(en|eth)\S+", bridge, re.MULTILINE), bridge
    assert machine.ssh("cat /proc/xen/capabilities").strip() == "control_d"
    FIGURES["first boot: root file system"] = f"{size / 1024**3:.1f} GiB"


def test_wizard_over_https_offers_and_enrols_the_own_dom0(appliance: Booted) -> None:
    client = PinnedClient(appliance.machine, appliance.screen)
    assert client.post_form("/setup/", {"token": appliance.screen.token}
                            ).headers["Location"] == "/setup/admin/"
    admin = client.post_form("/setup/admin/", {"username": "admin", "password1": STRONG,
                                               "password2": STRONG})
    assert admin.headers["Location"] == "/setup/appliance/", admin.text[-2000:]
    named = client.post_form("/setup/appliance/", {"name": "eisxen", "time_zone": "UTC"})
    assert named.headers["Location"] == "/setup/host/"
    page = client.get(client.url("/setup/host/"), timeout=120).text
    assert 'value="xen:///system"' in page and 'value="dom0"' in page
    done = client.post_form("/setup/host/", {"name": "dom0", "uri": "xen:///system"})
    assert done.status_code == 302 and done.headers["Location"] == "/", done.text[-3000:]
    hosts = client.get(client.url("/api/v1/hosts/"), timeout=120).json()
    rows = hosts["results"] if isinstance(hosts, dict) else hosts
    assert [(h["name"], h["uri"], h["state"]) for h in rows] == [
        ("dom0", "xen:///system", "online")
    ], rows
    appliance.facts["client"] = client


def test_reboot_keeps_setup_data_and_secrets(appliance: Booted) -> None:
    machine = appliance.machine
    before = secrets_of(machine)
    offset = len(machine.console())
    machine.ssh("systemctl reboot", check=False, timeout=60)
    screen = machine.screen(timeout=1500, after=offset)
    assert screen.token == "(set-up is done)"
    assert screen.fingerprint == appliance.screen.fingerprint
    after = secrets_of(machine)  # the SSH host key is checked by the login itself too
    assert after == before
    client = PinnedClient(machine, screen)
    assert client.post_form("/accounts/login/", {"username": "admin", "password": STRONG}
                            ).status_code == 302
    hosts = client.get(client.url("/api/v1/hosts/"), timeout=300).json()
    rows = hosts["results"] if isinstance(hosts, dict) else hosts
    assert [(h["name"], h["uri"]) for h in rows] == [("dom0", "xen:///system")]
    assert client.get(client.url("/setup/"), timeout=120).status_code == 404


def test_two_appliances_from_one_image_share_no_secret(
    appliance: Booted, appliance_image: ApplianceImage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    second = boot_appliance(appliance_image, tmp_path_factory.mktemp("appliance2"), "appliance2")
    try:
        ours, theirs = secrets_of(appliance.machine), secrets_of(second.machine)
        assert second.screen.token != appliance.screen.token
        assert second.screen.fingerprint != appliance.screen.fingerprint
        for path in SECRETS:
            assert ours[path] != theirs[path], path
    finally:
        second.machine.remove()
