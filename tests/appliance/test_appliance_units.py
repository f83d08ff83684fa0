"""The appliance builder's and installer's parts that need no root and no boot (fast)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.test import Client, override_settings

from lab.appliance import image
from lab.rootfs import ImageBuildError

BASE = Path(__file__).resolve().parent.parent.parent
INSTALL = BASE / "deploy" / "install.sh"


def test_grub_menu_boots_xen_by_default_with_a_rescue_entry() -> None:
    text = image.grub_config("0b7c…uuid", "xen-4.17-amd64.gz", "vmlinuz-6.1.0-9-amd64",
                             "initrd.img-6.1.0-9-amd64")
    entries = text.split("menuentry ")[1:]
    assert "set default=0" in text and len(entries) == 2
    xen, rescue = entries
    assert "multiboot2 /boot/xen-4.17-amd64.gz placeholder dom0_mem=2048M" in xen
    # The same Xen arguments as update-grub's (the shipped grub.d file), eager FPU among them.
    xen_args = image.grub_defaults()["GRUB_CMDLINE_XEN_DEFAULT"]
    assert f"placeholder {xen_args}\n" in xen and "spec-ctrl=eager-fpu" in xen_args
    assert "module2 /boot/vmlinuz-6.1.0-9-amd64 placeholder root=UUID=0b7c…uuid" in xen
    assert "console=hvc0" in xen and "module2 --nounzip /boot/initrd.img" in xen
    assert "linux /boot/vmlinuz-6.1.0-9-amd64 root=UUID=0b7c…uuid" in rescue
    assert "multiboot" not in rescue
    # Nothing only an emulator needs (the lab's dom0s run with smap=0 smep=0 cet=0).
    assert "smap" not in text and "bootscrub" not in text


def test_disk_has_an_mbr_partition_and_grub_before_it(tmp_path: Path) -> None:
    filesystem = tmp_path / "root.ext4"
    with filesystem.open("wb") as handle:
        handle.truncate(8 * 1024 * 1024)
    handle_bytes = b"\xeb\x63\x90" + b"B" * 509
    boot_img = tmp_path / "boot.img"
    boot_img.write_bytes(handle_bytes)
    core = tmp_path / "core.img"
    core.write_bytes(b"C" * 3000)
    raw = tmp_path / "disk.img"
    image._make_disk(raw, filesystem, core, boot_img)
    data = raw.read_bytes()
    assert data[:440] == handle_bytes[:440]
    assert data[510:512] == b"\x55\xaa"  # the partition table's signature, kept
    assert data[512:3512] == b"C" * 3000
    table = subprocess.run(["sfdisk", "-d", str(raw)], capture_output=True, text=True,
                           check=True, timeout=60).stdout
    assert "start=        2048" in table and "type=83" in table and "bootable" in table
    assert raw.stat().st_size == 1024 * 1024 + 8 * 1024 * 1024
    core.write_bytes(b"C" * (1024 * 1024))
    with pytest.raises(ImageBuildError, match="does not fit"):
        image._make_disk(raw, filesystem, core, boot_img)


def test_image_carries_the_product_not_the_lab_or_tests() -> None:
    files = image.source_files()
    assert "manage.py" in files and "deploy/install.sh" in files
    assert "deploy/appliance/first-boot.sh" in files
    assert not [f for f in files if f.startswith(("lab/", "tests/", "bench/"))]


def test_a_secret_left_in_the_root_stops_the_build(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    for rel in ("etc/ssh", "etc/xenweb", "var/lib/dbus", "var/lib/xenweb"):
        (root / rel).mkdir(parents=True)
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("private")
    (root / image.debian.POLICY_RC_D).parent.mkdir(parents=True)
    (root / image.debian.POLICY_RC_D).write_text("exit 101")
    image._finish_root(root)
    assert not (root / "etc/ssh/ssh_host_ed25519_key").exists()
    assert not (root / image.debian.POLICY_RC_D).exists()
    assert (root / "etc/machine-id").read_text() == ""
    (root / "etc/xenweb/xenweb.env").write_text("SECRET_KEY=x")
    with pytest.raises(ImageBuildError, match=r"would carry a secret: /etc/xenweb/xenweb\.env"):
        image._finish_root(root)


def _dry_run(*args: str) -> str:
    result = subprocess.run(["bash", str(INSTALL), "--dry-run", "--source", str(BASE), *args],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_install_for_an_image_makes_no_secret_and_starts_nothing() -> None:
    out = _dry_run("--image")
    for step in ("apt-get install", "xen-system-amd64", "useradd --system",
                 "XENWEB_BOOTSTRAP_PROFILE=appliance", "collectstatic",
                 "SECRET_KEY=image-build-not-a-secret", "deploy/appliance/install-files.sh",
                 "systemctl enable libvirtd.service xenweb.target",
                 "libvirtd.service.d/xen.conf"):
        assert step in out, step
    for absent in ("openssl req", "xenweb.env", "redis-password", "migrate", "first_boot",
                   "--now", "nginx -t", "restart"):
        assert absent not in out, absent


def test_install_at_first_boot_makes_only_this_machine_s_part() -> None:
    out = _dry_run("--first-boot", "--server-name", "xenweb")
    for step in ("/etc/xenweb/xenweb.env", "/etc/redis/xenweb.conf", "openssl req -x509",
                 "manage.py migrate", "manage.py first_boot"):
        assert step in out, step
    for absent in ("apt-get", "useradd", "rsync", "collectstatic", "systemctl"):
        assert absent not in out, absent


@pytest.mark.django_db
def test_wizard_offers_the_local_hypervisor_on_the_appliance(client: Client) -> None:
    from django.conf import settings

    settings.SETUP_TOKEN_FILE.unlink(missing_ok=True)
    client.get("/setup/")
    token = settings.SETUP_TOKEN_FILE.read_text().strip()
    client.post("/setup/", {"token": token})
    client.post("/setup/admin/", {"username": "admin", "password1": "Tr1cky-pass-2026!",
                                  "password2": "Tr1cky-pass-2026!"})
    client.post("/setup/appliance/", {"name": "x", "time_zone": "UTC"})
    with override_settings(LOCAL_HYPERVISOR="xen:///system"):
        page = client.get("/setup/host/").content.decode()
    assert 'value="xen:///system"' in page and 'value="dom0"' in page
    assert "this machine&#x27;s own hypervisor" in page or "this machine's own" in page
    settings.SETUP_TOKEN_FILE.unlink(missing_ok=True)
