"""Commands on the P2V source over the system ``ssh`` client.

The host key must be the one the user confirmed (pinned in the appliance's known_hosts,
see xenweb.appliance.sshkeys); ssh then runs with StrictHostKeyChecking=yes, so a key that
changes later aborts every following connection too. Authentication is the appliance's
key (BatchMode: ssh never prompts).
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass

from xenweb.appliance.sshkeys import (
    HostKeyError,
    HostKeyMismatch,
    ensure_keypair,
    known_hosts_path,
    verify_host_key,
)

SSH = "/usr/bin/ssh"


class P2VError(RuntimeError):
    """A P2V step failed; the message says what and why, in the operator's words."""


class HostKeyRefused(P2VError):
    """The source's host key is not the confirmed one: never retried."""


class ConnectionLost(P2VError):
    """The SSH session ended early: worth retrying."""


@dataclass(frozen=True)
class Source:
    address: str
    port: int = 22
    username: str = "root"

    @property
    def label(self) -> str:
        return f"{self.username}@{self.address}:{self.port}"


def confirm_host_key(source: Source, fingerprint: str | None) -> str:
    """The source's host key fingerprint, checked against ``fingerprint`` and then pinned.

    Without ``fingerprint`` (the inventory preview) the offered key is only read and
    returned for the user to confirm; a key different from an earlier pin is refused.
    """
    try:
        return verify_host_key(source.address, source.port, fingerprint)
    except HostKeyMismatch as exc:
        raise HostKeyRefused(str(exc)) from exc
    except HostKeyError as exc:
        raise P2VError(str(exc)) from exc


def ssh_args(source: Source, command: list[str]) -> list[str]:
    """The ``ssh`` argument list running ``command`` (quoted for the remote shell)."""
    return [
        SSH, "-T", "-p", str(source.port), "-i", str(ensure_keypair()),
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts_path()}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=15",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        "-o", "LogLevel=ERROR",
        "-l", source.username, "--", source.address.strip("[]"),
        shlex.join(command),
    ]


def explain(source: Source, returncode: int, stderr: str) -> P2VError:
    """The ssh client's failure as a P2VError of the right kind."""
    text = " ".join(stderr.strip().splitlines()[-3:]) or f"exit status {returncode}"
    if "host key" in stderr.lower() and ("verification failed" in stderr.lower()
                                         or "changed" in stderr.lower()):
        return HostKeyRefused(f"The host key of {source.address}:{source.port} is not the "
                              f"confirmed one; the connection was refused ({text}).")
    if "Permission denied" in stderr:
        return P2VError(f"{source.label} refused the appliance's SSH key: add the key shown "
                        f"on the P2V page to the user's authorized_keys ({text}).")
    if returncode == 255:
        return ConnectionLost(f"SSH connection to {source.label} failed: {text}")
    return P2VError(f"The command on {source.label} failed: {text}")


def run(source: Source, command: list[str], *, stdin: bytes = b"",
        timeout: float = 120.0) -> bytes:
    """Run ``command`` on the source; its stdout, or a P2VError that says why not."""
    try:
        done = subprocess.run(ssh_args(source, command), input=stdin, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConnectionLost(f"{source.label} did not answer within {timeout:.0f} s.") from exc
    if done.returncode != 0:
        raise explain(source, done.returncode, done.stderr.decode(errors="replace"))
    return done.stdout


def popen(source: Source, command: list[str]) -> subprocess.Popen[bytes]:
    """Start ``command`` on the source with pipes (the caller writes stdin, reads stdout)."""
    return subprocess.Popen(ssh_args(source, command), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
