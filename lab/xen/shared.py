"""Storage both Xen lab hosts can write: a directory of xen1 exported over NFS.

xen1 exports ``manager.SHARED_DIR`` to the storage network ``10.99.0.0/24`` (root not
squashed, as libvirt writes as root). The NFS server is installed in every dom0 but started
only here, once both hosts run, so a single lab host boots without it. Both hosts mount the
export through the app (libvirt ``netfs`` pools, xen1 over its own storage address), not here.
"""

from __future__ import annotations

import logging
import time

from lab.errors import LabError

from .manager import EXPORTS, SHARED_DIR, XenHost
from .remote import run_on

logger = logging.getLogger(__name__)

NFS_PORT = 2049
REACH_TIMEOUT_S = 120.0


def ensure_shared_storage(server: XenHost, client: XenHost) -> None:
    """Start the NFS server on ``server`` and wait until ``client`` reaches it over the
    storage network. Idempotent."""
    began = time.monotonic()
    run_on(server, ["mkdir", "-p", SHARED_DIR])
    run_on(server, ["tee", "/etc/exports"], stdin=EXPORTS)
    run_on(server, ["systemctl", "start", "nfs-server.service"], timeout=300)
    run_on(server, ["exportfs", "-ra"])
    exports = run_on(server, ["exportfs", "-v"]).stdout
    if SHARED_DIR not in exports:
        raise LabError(f"{server.name} does not export {SHARED_DIR}: {exports.strip()!r}")
    deadline = time.monotonic() + REACH_TIMEOUT_S
    probe = ["timeout", "10", "bash", "-c", f"</dev/tcp/{server.storage_address}/{NFS_PORT}"]
    while True:
        if run_on(client, probe, check=False).returncode == 0:
            break
        if time.monotonic() > deadline:
            raise LabError(
                f"{client.name} cannot reach the NFS server {server.storage_address}:{NFS_PORT} "
                f"on the storage network within {REACH_TIMEOUT_S:.0f} s"
            )
        time.sleep(2.0)
    logger.info("%s exports %s to %s (%.0f s)", server.name, SHARED_DIR, client.name,
                time.monotonic() - began)


def export_source(server: XenHost) -> tuple[str, str]:
    """(NFS server address, exported directory) as the other host mounts it."""
    return server.storage_address, SHARED_DIR
