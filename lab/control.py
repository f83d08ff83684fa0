"""What the lab asks of its running libvirtds: readiness, storage pools, guest teardown.

Through the adapter ``hosts.virt`` like the rest of the project: the lab imports no libvirt.
Lab URIs are plain TCP on the loopback (``qemu+tcp://127.0.0.1:PORT/system``), hence targets
with ``allow_insecure=True``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hosts.virt import HostProbe, VirtError, VirtTarget, probe
from hosts.virt.host_setup import (
    DirPool,
    destroy_running_guests,
    ensure_bridged_network,
    ensure_dir_pools,
)

SHARED_POOL = "lab-shared"
LOCAL_POOL = "local"
# Like a Debian host's libvirt network of that name, which P2V and V2V offer first; here it
# forwards to the lab's bridge (lab.bridge), since NAT would need a firewall tool.
NETWORK = "default"


class ControlError(RuntimeError):
    pass


def wait_until_answering(uri: str, timeout: float, alive: Callable[[], bool]) -> HostProbe:
    """Probe ``uri`` until it answers; stop early when ``alive()`` turns false."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            return probe(VirtTarget(uri, allow_insecure=True), timeout=min(10.0, timeout))
        except VirtError as exc:
            last = str(exc)
        if not alive():
            raise ControlError(f"libvirtd exited before answering at {uri} ({last})")
        if time.monotonic() >= deadline:
            raise ControlError(f"{uri} did not answer within {timeout:g} s ({last})")
        time.sleep(0.2)


@dataclass(frozen=True)
class PoolSpec:
    name: str
    path: Path


def ensure_pools(uri: str, specs: list[PoolSpec], timeout: float = 60.0) -> None:
    """Define, start and autostart the dir pools ``specs`` on ``uri`` (idempotent)."""
    for spec in specs:
        spec.path.mkdir(parents=True, exist_ok=True)
    pools = [DirPool(spec.name, str(spec.path)) for spec in specs]
    try:
        ensure_dir_pools(VirtTarget(uri, allow_insecure=True), pools, timeout=timeout)
    except VirtError as exc:
        raise ControlError(f"cannot set up the storage pools on {uri}: {exc}") from exc


def ensure_network(uri: str, bridge: str, timeout: float = 60.0) -> None:
    """The network ``NETWORK`` on ``uri``, forwarding to the host bridge ``bridge``."""
    try:
        ensure_bridged_network(VirtTarget(uri, allow_insecure=True), NETWORK, bridge,
                               timeout=timeout)
    except VirtError as exc:
        raise ControlError(f"cannot set up the network '{NETWORK}' on {uri}: {exc}") from exc


def destroy_guests(uri: str, timeout: float = 60.0) -> list[str]:
    """Destroy (power off) every running guest on ``uri``; the names destroyed."""
    try:
        return destroy_running_guests(VirtTarget(uri, allow_insecure=True), timeout=timeout)
    except VirtError as exc:
        raise ControlError(f"cannot stop the guests on {uri}: {exc}") from exc
