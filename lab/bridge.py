"""The lab's Linux bridge on this machine: every lab host's network 'default' forwards to
it (lab.control.ensure_network), so guests get a real link, as on a host whose 'default'
bridges to its NIC. No address, no uplink. Named after the lab's directory, so that two
labs on one machine (two appliances, two test runs) never share one.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

IP = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin") or "/usr/sbin/ip"
PREFIX = "xwlab"


def ip(*args: str, check: bool = True) -> None:
    subprocess.run([IP, *args], check=check, capture_output=True, text=True, timeout=30)


def bridge_name(root: Path) -> str:
    return PREFIX + hashlib.sha256(str(root).encode()).hexdigest()[:10]  # 15 characters


def ensure_bridge(root: Path) -> str:
    """The lab's bridge, made if missing and up; its name."""
    name = bridge_name(root)
    if not Path("/sys/class/net", name).exists():
        ip("link", "add", "name", name, "type", "bridge")
    ip("link", "set", name, "up")
    return name


def remove_bridge(root: Path) -> None:
    ip("link", "delete", bridge_name(root), check=False)
