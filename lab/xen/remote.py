"""Commands on a Xen lab dom0 over SSH: the appliance's key, the host's own known key.

For the lab's plumbing (starting the NFS server, out-of-band changes in tests), never for
the product, which talks to dom0 through libvirt only.
"""

from __future__ import annotations

import shlex
import subprocess
import time

from hosts.virt import ssh as virt_ssh
from lab.errors import LabError

from .manager import XenHost

SSH_TIMEOUT_S = 120.0
CONNECT_ATTEMPTS = 4
NOT_CONNECTED = "kex_exchange_identification"


def ssh_argv(host: XenHost, command: list[str]) -> list[str]:
    """The ssh command line running ``command`` (quoted word by word) as root on dom0: the
    appliance's key, and the host's own known_hosts (not the appliance's pins)."""
    from xenweb.appliance.sshkeys import ensure_keypair

    login = virt_ssh.SshLogin(known_hosts=str(host.known_hosts), key=str(ensure_keypair()))
    return virt_ssh.ssh_argv(
        login, "127.0.0.1", user="root", port=host.ssh_port,
        options=["-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "-o", "LogLevel=ERROR"],
        command=[shlex.join(command)],
    )


def run_on(host: XenHost, command: list[str], *, timeout: float = SSH_TIMEOUT_S,
           check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on the dom0; a failure (with ``check``) raises LabError with its
    output. A connection that sshd closed before the key exchange (seen now and then on a
    busy TCG dom0) ran nothing and is tried again."""
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            result = subprocess.run(ssh_argv(host, command), capture_output=True, text=True,
                                    timeout=timeout, check=False, input=stdin)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LabError(f"{host.name}: {shlex.join(command)}: {exc}") from exc
        if not (result.returncode == 255 and NOT_CONNECTED in result.stderr):
            break
        if attempt < CONNECT_ATTEMPTS:
            time.sleep(2.0 * attempt)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-1000:]
        raise LabError(f"{host.name}: {shlex.join(command)} exited with "
                       f"{result.returncode}: {detail}")
    return result
