"""The appliance's own SSH key pair, used for xen+ssh:// hosts (and later P2V)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

KEY_NAME = "id_ed25519"
SSH_KEYGEN = "/usr/bin/ssh-keygen"


def key_dir() -> Path:
    path = settings.DATA_DIR / "ssh"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def ensure_keypair(comment: str = "xenweb-appliance") -> Path:
    """Generate the key pair once; returns the private key's path."""
    private = key_dir() / KEY_NAME
    if not private.exists():
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)],
            check=True, capture_output=True, timeout=30,
        )
    return private


def public_key() -> str:
    return ensure_keypair().with_suffix(".pub").read_text().strip()


# --- host keys: pinned in the appliance's own known_hosts --------------------------------------

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


def known_hosts_path() -> Path:
    """``$XENWEB_DATA_DIR/ssh/known_hosts``: the only known_hosts the appliance trusts."""
    return key_dir() / KNOWN_HOSTS


def host_marker(host: str, port: int | None = None) -> str:
    """How OpenSSH (and libssh) name a host in known_hosts: ``host`` or ``[host]:port``."""
    host = host.strip("[]")
    if not port or port == 22:
        return host
    return f"[{host}]:{port}"


def fingerprint(key_line: str) -> str:
    """``SHA256:<base64>`` of a ``[marker] type base64 [comment]`` key line (as ssh-keygen -l)."""
    parts = key_line.split()
    for index, part in enumerate(parts[:-1]):
        if part in KEY_TYPES or part.startswith(("ssh-", "ecdsa-", "sk-")):
            blob = parts[index + 1]
            break
    else:
        raise HostKeyError(f"not an SSH public key line: {key_line[:60]!r}")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HostKeyError(f"not an SSH public key line: {exc}") from exc
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


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


@contextlib.contextmanager
def _known_hosts_locked() -> Iterator[Path]:
    path = known_hosts_path()
    with open(path.with_name(".known_hosts.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def pin_host_key(host: str, port: int, key_line: str) -> str:
    """Record ``key_line`` as the only trusted key of ``host:port``; returns its fingerprint.

    Replaces what was pinned for that host before (call it only with a key the user or the
    caller confirmed). Written atomically, mode 0600.
    """
    key_type, blob = _key_part(key_line)
    marker = host_marker(host, port)
    line = f"{marker} {key_type} {blob}"
    with _known_hosts_locked() as path:
        kept = [entry for entry in _read_lines(path) if entry.split(" ", 1)[0] != marker]
        tmp = path.with_name(".known_hosts.tmp")
        tmp.write_text("\n".join([*kept, line]) + "\n")
        tmp.chmod(0o600)
        os.replace(tmp, path)
    return fingerprint(line)


def pinned_fingerprint(host: str, port: int = 22) -> str | None:
    """The fingerprint pinned for ``host:port``, or None if none is."""
    marker = host_marker(host, port)
    for entry in _read_lines(known_hosts_path()):
        if entry.split(" ", 1)[0] == marker:
            with contextlib.suppress(HostKeyError):
                return fingerprint(entry)
    return None


def unpin_host_key(host: str, port: int = 22) -> None:
    marker = host_marker(host, port)
    with _known_hosts_locked() as path:
        lines = _read_lines(path)
        kept = [entry for entry in lines if entry.split(" ", 1)[0] != marker]
        if kept != lines:
            tmp = path.with_name(".known_hosts.tmp")
            tmp.write_text("".join(f"{entry}\n" for entry in kept))
            tmp.chmod(0o600)
            os.replace(tmp, path)


def verify_host_key(host: str, port: int = 22, expected: str | None = None) -> str:
    """Check (and on first contact pin) the key ``host:port`` offers; returns its fingerprint.

    - ``expected`` given (a fingerprint the user confirmed): the offered key must match it;
      it is then pinned, replacing an older pin (the user confirmed the new key).
    - otherwise: trust on first use; the key is pinned if nothing was pinned for that host.
    A key that differs from the pinned one is always refused:
    ``host key of HOST changed: expected SHA256:…, got SHA256:…``.
    """
    key_line, offered = scan_host_key(host, port)
    label = host_marker(host, port)
    pinned = pinned_fingerprint(host, port)
    if expected is not None:
        expected = expected.strip()
        if not expected.startswith("SHA256:"):
            expected = f"SHA256:{expected}"
        if expected.rstrip("=") != offered:
            raise HostKeyMismatch(
                f"host key of {label} does not match the confirmed fingerprint: "
                f"expected {expected}, got {offered}"
            )
        pin_host_key(host, port, key_line)  # confirmed by the caller: (re)pinned
        return offered
    if pinned is not None and pinned != offered:
        raise HostKeyMismatch(f"host key of {label} changed: expected {pinned}, got {offered}")
    if pinned is None:
        pin_host_key(host, port, key_line)
    return offered
