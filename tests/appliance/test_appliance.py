"""The appliance image as a user meets it: booted from the image under QEMU (SeaBIOS, the
image's GRUB, Debian's stock Xen 4.17), its console read for the address, setup token and
certificate fingerprint, the wizard completed over HTTPS through nginx with the certificate
pinned to that fingerprint, then rebooted; a second machine from the same image shares no
secret with the first. The tests run in file order on one booted machine."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conversions.inspection.inspector import inspect_image
from conversions.rewrite.convert import XEN_PV, convert_guest
from lab.appliance.boot import BootedAppliance
from lab.appliance.image import BASE, ApplianceImage, source_files
from lab.bootdisk import BOOT_DISK_BANNER, ensure_boot_disk
from tests.appliance.conftest import FIGURES, Booted, boot_appliance
from tests.appliance.https import PinnedClient, read_console

# The first test's set-up may build the image (minutes) and boots it, twice at worst.
pytestmark = pytest.mark.timeout(3600)

STRONG = "Appliance-passphrase-2026"
UPLOAD_MIB = 256
CHUNK = 1024 * 1024
GUEST_HOSTNAME = "eisxen-pv"
STEP_TIMEOUT = 600.0  # a step inside the TCG-emulated appliance on a busy machine
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


def test_console_screen_follows_a_new_address(appliance: Booted) -> None:
    """The gettys show the address anew when it changes (agetty's \\4{xenbr0}). The machine
    moves to another address and back by itself: QEMU's port forward reaches 10.0.2.15 only,
    so the SSH session that starts it cannot stay."""
    machine = appliance.machine
    offset = len(machine.console())
    machine.ssh(
        "systemd-run --quiet --unit xenweb-test-readdress --on-active=2 /bin/sh -c '"
        "ip addr del 10.0.2.15/24 dev xenbr0; ip addr add 10.0.3.77/24 dev xenbr0; sleep 20; "
        "ip addr del 10.0.3.77/24 dev xenbr0; networkctl reconfigure xenbr0'")
    machine.wait_for(re.compile(r"open https://10\.0\.3\.77/ in a browser.*"
                                r"open https://10\.0\.2\.15/ in a browser", re.DOTALL),
                     after=offset, timeout=STEP_TIMEOUT, what="the screen with each address")

    def back_on_its_address() -> bool:
        try:
            shown = machine.ssh("ip -4 -br addr show xenbr0", check=False, timeout=90)
        except subprocess.TimeoutExpired:
            return False
        return "10.0.2.15/24" in shown and "10.0.3.77" not in shown

    wait_for("SSH on the old address again", back_on_its_address)


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
    # The console screen follows: the token is gone once set-up is done.
    appliance.machine.wait_for(re.compile(re.escape("xenweb setup token: (set-up is done)")),
                               timeout=STEP_TIMEOUT)


def results(response: Any) -> list[dict[str, Any]]:
    data = response.json()
    return data["results"] if isinstance(data, dict) and "results" in data else data


def wait_for(what: str, probe: Any, timeout: float = STEP_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"no {what} in {timeout:.0f} s")


def pv_disk(folder: Path) -> Path:
    """The lab's boot disk converted for Xen PV by the product's own conversion (root by
    UUID, console=hvc0), then made UPLOAD_MIB long with random data at the end (the
    checksum covers real bytes, not only holes)."""
    disk = folder / "pv.img"
    shutil.copyfile(ensure_boot_disk(GUEST_HOSTNAME, "uuid").path, disk)
    convert_guest(str(disk), inspect_image(disk), XEN_PV)
    with disk.open("r+b") as handle:
        handle.truncate((UPLOAD_MIB - 64) * CHUNK)
        handle.seek(0, os.SEEK_END)
        for _ in range(64):
            handle.write(os.urandom(CHUNK))
    return disk


class PausedBody:
    """A request body that stops after `pause_at` bytes until `go` is set, so the test can
    watch the upload's job while the rest of the body has not been sent."""

    def __init__(self, path: Path, pause_at: int) -> None:
        self.path, self.pause_at = path, pause_at
        self.paused, self.go = threading.Event(), threading.Event()

    def __len__(self) -> int:
        # requests sends a body of known length with Content-Length (else chunked, which
        # is not how a browser or curl uploads a file).
        return self.path.stat().st_size

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        with self.path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                if sent >= self.pause_at and not self.go.is_set():
                    self.paused.set()
                    self.go.wait(STEP_TIMEOUT)
                yield chunk
                sent += len(chunk)


def test_uploaded_volume_boots_a_pv_guest_with_its_console_over_wss(
    appliance: Booted, tmp_path: Path
) -> None:
    client: PinnedClient = appliance.facts["client"]
    host = results(client.api("GET", "/api/v1/hosts/"))[0]
    pool = wait_for("default pool on the dom0", lambda: next(
        (p for p in results(client.api("GET", "/api/v1/pools/")) if p["name"] == "default"),
        None))
    disk = pv_disk(tmp_path)
    created = client.api("POST", "/api/v1/volumes/", json={
        "pool": pool["id"], "name": "eisxen-pv.img", "size": disk.stat().st_size,
        "format": "raw"})
    assert created.status_code == 201, created.text
    volume = created.json()

    # The upload goes through nginx as it arrives: with half the body sent, the job has
    # seen bytes of it (a buffering proxy would pass nothing on before the whole body).
    body = PausedBody(disk, pause_at=disk.stat().st_size // 2)
    outcome: dict[str, Any] = {}

    def upload() -> None:
        outcome["response"] = client.api(
            "PUT", f"/api/v1/volumes/{volume['id']}/content", data=body, timeout=1800,
            headers={"Content-Type": "application/octet-stream"})

    sender = threading.Thread(target=upload)
    began = time.monotonic()
    sender.start()
    try:
        wait_for("the upload halfway (or its early answer)",
                 lambda: body.paused.is_set() or "response" in outcome)
        assert "response" not in outcome, outcome["response"].text
        job = wait_for("upload progress while the body arrives", lambda: next(
            (j for j in results(client.api("GET", "/api/v1/jobs/"))
             if j["kind"] == "volume.upload" and j["state"] == "running"
             and (j["done"] or 0) >= disk.stat().st_size // 4), None))
        assert job["done"] < job["total"] == disk.stat().st_size
    finally:
        body.go.set()
        sender.join(1800)
    response = outcome["response"]
    assert response.status_code in (200, 201, 204), response.text
    FIGURES[f"upload of {UPLOAD_MIB} MiB through nginx (TCG)"] = (
        f"{time.monotonic() - began:.0f} s with a pause")
    path = client.api("GET", f"/api/v1/volumes/{volume['id']}/").json()["path"]
    remote = appliance.machine.ssh(f"sha256sum {path}").split()[0]
    assert remote == hashlib.sha256(disk.read_bytes()).hexdigest()

    guest = client.api("POST", "/api/v1/guests/", json={
        "name": GUEST_HOSTNAME, "host": host["id"], "type": "pv", "memory_mib": 192,
        "bootloader": "pygrub", "disks": [{"volume": volume["id"]}],
        "nics": [{"bridge": "xenbr0"}]})
    assert guest.status_code == 201, guest.text
    guest_id = guest.json()["id"]
    for action, data in (("autostart", {"enabled": True}), ("start", {})):
        done = client.api("POST", f"/api/v1/guests/{guest_id}/{action}/", json=data)
        assert done.status_code == 200, (action, done.text)
    seen = read_console(client, guest_id, f"{BOOT_DISK_BANNER}: hostname={GUEST_HOSTNAME}",
                        timeout=STEP_TIMEOUT)
    line = next(x for x in seen.splitlines() if BOOT_DISK_BANNER in x)
    mac = client.api("GET", f"/api/v1/guests/{guest_id}/").json()["nics"][0]["mac"]
    assert f"macs={mac}" in line, line  # the guest sees its NIC on xenbr0
    appliance.facts["guest"] = guest_id


def test_reboot_keeps_setup_data_and_secrets(appliance: Booted) -> None:
    machine = appliance.machine
    before = secrets_of(machine)
    guest = appliance.facts.get("guest")
    offset = len(machine.console())
    machine.ssh("systemctl reboot", check=False, timeout=60)
    screen = machine.screen(timeout=1500, after=offset)
    if guest:  # running when the host went down: shut down by libvirt-guests, not cut off
        down = machine.console()[offset:]
        assert f"Shutdown of guest {GUEST_HOSTNAME} complete" in down, down[-4000:]
    assert screen.token == "(set-up is done)"
    assert screen.fingerprint == appliance.screen.fingerprint
    after = secrets_of(machine)  # the SSH host key is checked by the login itself too
    assert after == before
    client = PinnedClient(machine, screen)
    # The gettys show the last boot's screen at once; the pages answer a little later.
    wait_for("the login page after the reboot", lambda: client.post_form(
        "/accounts/login/", {"username": "admin", "password": STRONG}).status_code == 302)
    rows = results(client.api("GET", "/api/v1/hosts/"))
    assert [(h["name"], h["uri"]) for h in rows] == [("dom0", "xen:///system")]
    assert client.get(client.url("/setup/"), timeout=120).status_code == 404
    if guest:  # marked autostart before the reboot: it runs again
        wait_for("the autostart guest running", lambda: client.api(
            "GET", f"/api/v1/guests/{guest}/").json()["state"] == "running")


def test_update_by_install_sh_keeps_data_secrets_and_setup(
    appliance: Booted, tmp_path: Path
) -> None:
    """A newer tree installed over the running appliance, as an update does it: the source
    copied over, `deploy/install.sh --source` run (apt, venv, migrate, static files, units)."""
    machine = appliance.machine
    before = secrets_of(machine)
    tree = tmp_path / "tree"
    for name in source_files():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(BASE / name, tree / name)
    (tree / "UPDATE-MARKER").write_text("newer tree\n")
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname=".")
    machine.ssh("rm -rf /usr/src/xenweb-update && mkdir -p /usr/src/xenweb-update && "
                "tar -x -C /usr/src/xenweb-update", stdin=archive.read_bytes())
    began = time.monotonic()
    log = machine.ssh("bash /usr/src/xenweb-update/deploy/install.sh "
                      "--source /usr/src/xenweb-update 2>&1", timeout=3600)
    FIGURES["update by install.sh (TCG)"] = f"{time.monotonic() - began:.0f} s"
    assert "Setup is complete." in log, log[-3000:]
    assert machine.ssh("cat /opt/xenweb/UPDATE-MARKER") == "newer tree\n"
    assert secrets_of(machine) == before
    assert machine.ssh("test -e /var/lib/xenweb/setup-token && echo token || echo none"
                       ).strip() == "none"
    client = PinnedClient(machine, appliance.screen)  # the same certificate
    # The services restart with the new code: the login answers once the web service does.
    wait_for("the web service back", lambda: client.post_form(
        "/accounts/login/", {"username": "admin", "password": STRONG}).status_code == 302)
    assert [h["uri"] for h in results(client.api("GET", "/api/v1/hosts/"))] == [
        "xen:///system"]


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
