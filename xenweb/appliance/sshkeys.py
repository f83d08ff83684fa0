"""The appliance's SSH identities (key pairs) and trust stores (known_hosts files).

Two of each, kept apart on purpose:

- the dom0 management identity (``ssh/id_ed25519``) and ``ssh/known_hosts``: dom0s trust this
  key as root, so it serves enrolled hosts only (libvirt's libssh transport, the VNC tunnel,
  the lab's dom0s); only administrators enrol hosts or re-pin their keys;
- the P2V identity (``ssh/id_ed25519_p2v``) and ``ssh/known_hosts_p2v``: what P2V logs in
  with and the source keys it pinned. Operators start P2V, so nothing P2V does may touch
  the dom0 key or the dom0 pins: ``conversions.p2v`` is given only ``P2V_IDENTITY`` and
  ``P2V_TRUST``.

The module-level functions without a store argument (``ensure_keypair``, ``public_key``,
``known_hosts_path``, ``pin_host_key``…) are the dom0 ones, as before the split;
``dom0_login`` is what the adapter is given (``hosts.virt.ssh.use_dom0_login``) for
whatever logs in to a dom0.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from hosts.virt.ssh import SshLogin

KEY_NAME = "id_ed25519"
SSH_KEYGEN = "/usr/bin/ssh-keygen"


def key_dir() -> Path:
    path = settings.DATA_DIR / "ssh"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@dataclass(frozen=True)
class SshIdentity:
    """One key pair in the data dir's ssh folder, generated on first use."""

    file_name: str
    comment: str
    purpose: str

    def private_key(self, comment: str | None = None) -> Path:
        """Generate the key pair once; returns the private key's path."""
        private = key_dir() / self.file_name
        if not private.exists():
            subprocess.run(
                [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment or self.comment,
                 "-f", str(private)],
                check=True, capture_output=True, timeout=30,
            )
        return private

    def public_key(self) -> str:
        return self.private_key().with_suffix(".pub").read_text().strip()


DOM0_IDENTITY = SshIdentity(KEY_NAME, "xenweb-appliance", "dom0 management (enrolled hosts)")
P2V_IDENTITY = SshIdentity("id_ed25519_p2v", "xenweb-p2v", "P2V sources")


def ensure_keypair(comment: str = "xenweb-appliance") -> Path:
    """The dom0 management key pair (generated once); returns the private key's path."""
    return DOM0_IDENTITY.private_key(comment)


def public_key() -> str:
    """The dom0 management public key (what a dom0's authorized_keys holds)."""
    return DOM0_IDENTITY.public_key()


def dom0_login() -> SshLogin:
    """The dom0 identity as the adapter uses it (hosts.virt.ssh, given it at start-up): the
    management key and the dom0 pins."""
    return SshLogin(known_hosts=str(known_hosts_path()), key=str(ensure_keypair()))


# --- host keys: pinned in the appliance's own known_hosts files --------------------------------

SSH_KEYSCAN = "/usr/bin/ssh-keyscan"
KNOWN_HOSTS = "known_hosts"
# Preferred first: the key pinned for a host is the first of these it offers.
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "rsa-sha2-512", "ssh-rsa")
_SCAN_TYPES = "ed25519,ecdsa,rsa"


class HostKeyError(RuntimeError):
    """A host key could not be read, or is not the one expected; the message says which."""


class HostKeyMismatch(HostKeyError):
    """The host offers a key other than the pinned or confirmed one."""


def host_marker(host: str, port: int | None = None) -> str:
    """How OpenSSH (and libssh) name a host in known_hosts: ``host`` or ``[host]:port``."""
    host = host.strip("[]")
    if not port or port == 22:
        return host
    return f"[{host}]:{port}"


def fingerprint(key_line: str) -> str:
    """``SHA256:<base64>`` of a ``[marker] type base64 [comment]`` key line (as ssh-keygen -l)."""
    _key_type, blob = _key_part(key_line)
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HostKeyError(f"not an SSH public key line: {exc}") from exc
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def normal_fingerprint(value: str) -> str:
    """A fingerprint as the user may give it (with or without ``SHA256:``, padding)."""
    value = value.strip()
    if not value.startswith("SHA256:"):
        value = f"SHA256:{value}"
    return value.rstrip("=")


def _key_part(key_line: str) -> tuple[str, str]:
    """``(type, base64)`` of a key line with or without a host marker in front."""
    parts = key_line.split()
    for index, part in enumerate(parts[:-1]):
        if part in KEY_TYPES or part.startswith(("ssh-", "ecdsa-", "sk-")):
            return part, parts[index + 1]
    raise HostKeyError(f"not an SSH public key line: {key_line[:60]!r}")


def scan_host_key(host: str, port: int = 22, timeout: float = 10.0) -> tuple[str, str]:
    """The host key ``host:port`` offers now, as ``(known_hosts line, SHA256 fingerprint)``.

    Runs ``ssh-keyscan`` (an argument list, no shell); prefers ed25519, then ECDSA, then RSA.
    """
    args = [SSH_KEYSCAN, "-T", str(max(1, int(timeout))), "-p", str(int(port)),
            "-t", _SCAN_TYPES, "--", host.strip("[]")]
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout + 10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostKeyError(f"cannot read the SSH host key of {host}:{port}: {exc}") from exc
    offered: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        with contextlib.suppress(HostKeyError):
            key_type, blob = _key_part(line)
            offered.setdefault(key_type, blob)
    for key_type in KEY_TYPES:
        if key_type in offered:
            line = f"{host_marker(host, port)} {key_type} {offered[key_type]}"
            return line, fingerprint(line)
    detail = " / ".join(result.stderr.strip().splitlines()[-2:]) or "no key offered"
    raise HostKeyError(f"cannot read the SSH host key of {host}:{port}: {detail}")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class TrustStore:
    """One known_hosts file in the data dir's ssh folder: the host keys pinned for one use."""

    file_name: str
    purpose: str

    def path(self) -> Path:
        return key_dir() / self.file_name

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Path]:
        path = self.path()
        with open(path.with_name(f".{self.file_name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield path
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, path: Path, lines: list[str]) -> None:
        tmp = path.with_name(f".{self.file_name}.tmp")
        tmp.write_text("".join(f"{entry}\n" for entry in lines))
        tmp.chmod(0o600)
        os.replace(tmp, path)

    def pin(self, host: str, port: int, key_line: str) -> str:
        """Record ``key_line`` as the only trusted key of ``host:port``; returns its
        fingerprint. Replaces what was pinned for that host before (call it only with a
        key the user or the caller confirmed). Written atomically, mode 0600."""
        key_type, blob = _key_part(key_line)
        marker = host_marker(host, port)
        line = f"{marker} {key_type} {blob}"
        with self._locked() as path:
            kept = [entry for entry in _read_lines(path) if entry.split(" ", 1)[0] != marker]
            self._write(path, [*kept, line])
        return fingerprint(line)

    def pinned(self, host: str, port: int = 22) -> str | None:
        """The fingerprint pinned for ``host:port``, or None if none is."""
        marker = host_marker(host, port)
        for entry in _read_lines(self.path()):
            if entry.split(" ", 1)[0] == marker:
                with contextlib.suppress(HostKeyError):
                    return fingerprint(entry)
        return None

    def unpin(self, host: str, port: int = 22) -> None:
        marker = host_marker(host, port)
        with self._locked() as path:
            lines = _read_lines(path)
            kept = [entry for entry in lines if entry.split(" ", 1)[0] != marker]
            if kept != lines:
                self._write(path, kept)

    def verify(self, host: str, port: int = 22, expected: str | None = None, *,
               offered_key: tuple[str, str] | None = None) -> str:
        """Check (and on first contact pin) the key ``host:port`` offers; returns its
        fingerprint.

        - ``expected`` given (a fingerprint the user confirmed): the offered key must match
          it; it is then pinned, replacing an older pin (the user confirmed the new key).
        - otherwise: trust on first use; the key is pinned if nothing was pinned for that
          host. A key that differs from the pinned one is always refused:
          ``host key of HOST changed: expected SHA256:…, got SHA256:…``.
        ``offered_key``: the ``(line, fingerprint)`` already scanned, if the caller has it.
        """
        key_line, offered = offered_key or scan_host_key(host, port)
        label = host_marker(host, port)
        pinned = self.pinned(host, port)
        if expected is not None:
            expected = normal_fingerprint(expected)
            if expected != offered:
                raise HostKeyMismatch(
                    f"host key of {label} does not match the confirmed fingerprint: "
                    f"expected {expected}, got {offered}"
                )
            self.pin(host, port, key_line)  # confirmed by the caller: (re)pinned
            return offered
        if pinned is not None and pinned != offered:
            raise HostKeyMismatch(
                f"host key of {label} changed: expected {pinned}, got {offered}")
        if pinned is None:
            self.pin(host, port, key_line)
        return offered


DOM0_TRUST = TrustStore(KNOWN_HOSTS, "enrolled hosts (dom0s)")
P2V_TRUST = TrustStore("known_hosts_p2v", "P2V sources")


# The dom0 store through the functions the rest of the code (and the Xen suite) calls.

def known_hosts_path() -> Path:
    """``$XENWEB_DATA_DIR/ssh/known_hosts``: the dom0 pins, the only known_hosts libvirt and
    the VNC tunnel trust."""
    return DOM0_TRUST.path()


def pin_host_key(host: str, port: int, key_line: str) -> str:
    return DOM0_TRUST.pin(host, port, key_line)


def pinned_fingerprint(host: str, port: int = 22) -> str | None:
    return DOM0_TRUST.pinned(host, port)


def unpin_host_key(host: str, port: int = 22) -> None:
    DOM0_TRUST.unpin(host, port)


def verify_host_key(host: str, port: int = 22, expected: str | None = None) -> str:
    """``DOM0_TRUST.verify``: the enrolment check of a dom0's key."""
    return DOM0_TRUST.verify(host, port, expected, offered_key=scan_host_key(host, port))
