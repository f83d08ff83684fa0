"""A Linux bridge on this machine for the lab hosts' guests: their NICs get a real link
without a libvirt network (which needs a firewall tool and the lab libvirtd's network
driver). No address, no uplink: the guest's NIC exists and shows its MAC, nothing more.

Named after the test session's pid; bridges a killed session left behind are removed by
the next one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.bridge import IP
from lab.bridge import ip as _ip

PREFIX = "xwtbr"


def _remove_stale() -> None:
    for link in Path("/sys/class/net").glob(f"{PREFIX}*"):
        pid = link.name[len(PREFIX):]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run([IP, "link", "delete", link.name], capture_output=True, timeout=30,
                           check=False)


@contextmanager
def lab_bridge() -> Iterator[str]:
    """The bridge's name, up for the block; deleted afterwards."""
    _remove_stale()
    name = f"{PREFIX}{os.getpid()}"[:15]
    subprocess.run([IP, "link", "delete", name], capture_output=True, timeout=30, check=False)
    _ip("link", "add", "name", name, "type", "bridge")
    try:
        _ip("link", "set", name, "up")
        yield name
    finally:
        subprocess.run([IP, "link", "delete", name], capture_output=True, timeout=30,
                       check=False)
