"""The appliance deployment files, checked as far as this machine allows: the install
script is shellcheck-clean and walks every step in its dry-run mode, the systemd units
pass `systemd-analyze verify`, and the nginx site passes `nginx -t` (TLS, websockets,
unbuffered uploads). A real install needs a Debian 12 dom0 booted into Xen."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BASE = Path(__file__).resolve().parent.parent
DEPLOY = BASE / "deploy"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: scripts/bootstrap.sh installs it")
    return path


def test_shell_scripts_are_shellcheck_clean() -> None:
    scripts = [DEPLOY / "install.sh", *sorted((DEPLOY / "appliance").glob("*.sh")),
               *sorted((BASE / "scripts").glob("*.sh"))]
    result = subprocess.run([_need("shellcheck"), "-x", *map(str, scripts)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_dry_run_walks_every_step_and_changes_nothing() -> None:
    result = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--dry-run", "--source",
                             str(BASE), "--server-name", "xen1.example.org"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in ("apt-get install", "xen-system-amd64", "libvirt-daemon-driver-xen",
                 "useradd --system", "usermod -a -G libvirt xenweb", "scripts/bootstrap.sh",
                 "/etc/xenweb/xenweb.env", "Redis on localhost only, with a password",
                 "/etc/redis/xenweb.conf",
                 "openssl req -x509", "subjectAltName=DNS:xen1.example.org",
                 "manage.py migrate", "manage.py first_boot", "nginx -t",
                 "systemctl enable --now xenweb.target",
                 "https://xen1.example.org/"):
        assert step in out, step
    assert not Path("/etc/xenweb/xenweb.env").exists() or "keep" in out


def test_install_refuses_bad_options() -> None:
    result = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--frobnicate"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and "unknown option '--frobnicate'" in result.stderr


def test_systemd_units_verify(tmp_path: Path) -> None:
    """The units as installed, with /opt/xenweb pointing at this checkout so that the
    programs they start exist."""
    appliance = DEPLOY / "appliance"
    installed = {"/usr/local/sbin/xenweb-first-boot": str(appliance / "first-boot.sh"),
                 "/usr/local/sbin/xenweb-console-info": str(appliance / "console-info.sh")}
    units = [*(DEPLOY / "systemd").iterdir(), *appliance.glob("*.service"),
             *appliance.glob("*.path")]
    for unit in units:
        text = unit.read_text().replace("/opt/xenweb", str(BASE))
        for path, here in installed.items():
            text = text.replace(path, here)
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(path) for path in tmp_path.iterdir())
    result = subprocess.run([_need("systemd-analyze"), "verify", "--man=no", *units],
                            capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "xenweb" not in result.stdout + result.stderr  # no warning about our units


def test_nginx_site_is_valid(tmp_path: Path) -> None:
    nginx = _need("nginx")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    site = (DEPLOY / "nginx" / "xenweb.conf").read_text()
    site = site.replace("/etc/xenweb/tls/cert.pem", str(cert)).replace(
        "/etc/xenweb/tls/key.pem", str(key))
    site = site.replace("listen 80 ", "listen 127.0.0.1:18080 ").replace(
        "listen [::]:80 default_server;", "").replace("listen 443 ", "listen 127.0.0.1:18443 ")
    site = site.replace("listen [::]:443 ssl http2 default_server;", "")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\nhttp {\n"
        f"  access_log off;\n  client_body_temp_path {tmp_path};\n"
        f"  include {tmp_path}/site.conf;\n}}\n")
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for needed in ("proxy_request_buffering off", "client_max_body_size 0",
                   'proxy_set_header Upgrade $http_upgrade', "return 301 https://"):
        assert needed in site
