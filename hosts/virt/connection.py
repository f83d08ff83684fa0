"""Opening libvirt connections: a per-process pool keyed by URI, and host probing.

``get_connection`` is for adapter modules inside ``hosts.virt`` only; the rest of
the project gets plain dataclasses (``HostProbe``...) and ``VirtError``
subclasses, never libvirt objects.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode

import libvirt

from . import runtime
from ._timeout import call_with_timeout
from .errors import (
    HostUnreachable,
    describe_error,
    dropped_during_handshake,
    host_label,
    translate,
)
from .host_uri import parse_uri
from .ssh import dom0_login
from .target import VirtTarget

__all__ = [
    "HostProbe",
    "call_on_own_connection",
    "close_all",
    "describe_error",
    "drop_connection",
    "get_connection",
    "probe",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_PROBE_TIMEOUT = 10.0
# A host that answers no keepalive for about a minute is lost. Shorter (libvirt's 5 s x 3)
# dropped busy but healthy dom0s in the middle of a guest start (pygrub on a loaded dom0).
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 6
HANDSHAKE_RETRY_PAUSE_S = 1.0
TCP_CHECK_TIMEOUT_S = 5.0

# The appliance authenticates with SSH keys or TLS certificates only: every
# interactive credential request is refused instead of prompting on a terminal.
_CREDENTIAL_TYPES = [
    libvirt.VIR_CRED_AUTHNAME,
    libvirt.VIR_CRED_PASSPHRASE,
    libvirt.VIR_CRED_ECHOPROMPT,
    libvirt.VIR_CRED_NOECHOPROMPT,
    libvirt.VIR_CRED_REALM,
]


def _refuse_credentials(_credentials: list[list[object]], _data: object) -> int:
    return -1


def _libvirt_uri(uri: str) -> str:
    """The URI handed to libvirt for ``uri`` (the URI the user enrolled).

    ``+ssh`` URIs go over libvirt's libssh transport (``+libssh``), which, unlike the
    ``ssh`` transport (the ``ssh`` program, reading root's ~/.ssh), takes the key and the
    known_hosts file from the URI: the dom0 identity (``hosts.virt.ssh.dom0_login``: the
    appliance's own key pair and its pinned ``$XENWEB_DATA_DIR/ssh/known_hosts``), with
    strict host key checking (``known_hosts_verify=normal``: an unknown or changed key is
    refused) and key authentication only, so nothing ever waits for a password prompt.
    Parameters the user wrote in the URI win.
    """
    parsed = parse_uri(uri)
    if parsed.transport != "ssh" or not parsed.netloc:
        return uri
    dom0 = dom0_login()
    params = list(parsed.params)
    given = {key for key, _ in params}
    defaults = {
        "keyfile": str(dom0.key),
        "known_hosts": dom0.known_hosts,
        "known_hosts_verify": "normal",
        "sshauth": "privkey",
    }
    params = [(key, value) for key, value in params if key != "no_tty"]
    params += [(key, value) for key, value in defaults.items() if key not in given]
    return f"{parsed.driver}+libssh://{parsed.netloc}{parsed.path}?{urlencode(params, safe='/:')}"


def _open(uri: str) -> libvirt.virConnect:
    """Open ``uri``. An SSH connection cut off during the handshake is tried once more if
    the host's SSH port accepts a TCP connection (sshd turns connections away at random
    beyond MaxStartups); if it does not, HostUnreachable says why (libssh says only
    "Socket error: disconnected"). Runs under the caller's timeout."""
    auth = [_CREDENTIAL_TYPES, _refuse_credentials, None]
    target = _libvirt_uri(uri)
    try:
        return libvirt.openAuth(target, auth, 0)
    except libvirt.libvirtError as exc:
        if not dropped_during_handshake(exc.get_error_message() or ""):
            raise
        _raise_if_ssh_port_unreachable(uri, exc)
        logger.info("%s hung up during the SSH handshake; trying once more", host_label(uri))
    time.sleep(HANDSHAKE_RETRY_PAUSE_S)
    return libvirt.openAuth(target, auth, 0)


def _raise_if_ssh_port_unreachable(uri: str, exc: libvirt.libvirtError) -> None:
    parsed = parse_uri(uri)
    if not parsed.hostname:
        return
    port = parsed.ssh_port
    try:
        with socket.create_connection((parsed.hostname, port), timeout=TCP_CHECK_TIMEOUT_S):
            return
    except TimeoutError:
        reason = "connection timed out"
    except OSError as tcp_error:
        reason = (tcp_error.strerror or str(tcp_error)).lower()
    raise HostUnreachable(
        f"Cannot reach {host_label(uri)} over SSH (port {port}): {reason}",
        uri=uri, code=exc.get_error_code(), detail=exc.get_error_message(),
    ) from exc


def _close_quietly(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError as exc:
        logger.debug("closing libvirt connection failed: %s", exc)


def _is_alive(conn: libvirt.virConnect) -> bool:
    try:
        return conn.isAlive() == 1
    except libvirt.libvirtError:
        return False


def _enable_keepalive(conn: libvirt.virConnect, uri: str) -> None:
    """Best effort: local drivers (test, local xen/qemu) do not support keepalive."""
    try:
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
    except libvirt.libvirtError as exc:
        logger.debug("no keepalive for %s: %s", uri, exc.get_error_message())


def _open_with_timeout(uri: str, timeout: float, budget: float) -> libvirt.virConnect:
    runtime.ensure_event_loop()
    try:
        conn = call_with_timeout(
            lambda: _open(uri),
            timeout=timeout,
            uri=uri,
            what="connecting",
            discard=_close_quietly,
            reported_timeout=budget,
        )
    except libvirt.libvirtError as exc:
        raise translate(exc, uri, connecting=True) from exc
    _enable_keepalive(conn, uri)
    return conn


class _ConnectionPool:
    """One open connection per URI, shared by all threads of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: dict[str, libvirt.virConnect] = {}
        self._uri_locks: dict[str, threading.Lock] = {}
        # Connections inherited over fork(): kept referenced so that their
        # destructor never closes the parent's socket from the child.
        self._orphans: list[libvirt.virConnect] = []

    def get(self, uri: str, timeout: float) -> libvirt.virConnect:
        deadline = time.monotonic() + timeout
        with self._lock:
            uri_lock = self._uri_locks.setdefault(uri, threading.Lock())
        # Another thread may be opening this URI right now: wait for it, bounded.
        if not uri_lock.acquire(timeout=timeout):
            raise HostUnreachable(
                f"Cannot reach {host_label(uri)}: connecting timed out after {timeout:g} s "
                "(another connection attempt is still pending)",
                uri=uri,
            )
        try:
            with self._lock:
                conn = self._conns.get(uri)
            if conn is not None:
                if _is_alive(conn):
                    return conn
                self._forget(uri, conn)
                _close_quietly(conn)
            remaining = max(deadline - time.monotonic(), 0.1)
            conn = _open_with_timeout(uri, remaining, timeout)
            with self._lock:
                self._conns[uri] = conn
            return conn
        finally:
            uri_lock.release()

    def _forget(self, uri: str, conn: libvirt.virConnect) -> None:
        with self._lock:
            if self._conns.get(uri) is conn:
                del self._conns[uri]

    def drop(self, uri: str) -> None:
        with self._lock:
            conn = self._conns.pop(uri, None)
        if conn is not None:
            _close_quietly(conn)

    def close_all(self) -> None:
        with self._lock:
            conns = list(self._conns.values())
            self._conns.clear()
        for conn in conns:
            _close_quietly(conn)

    def after_fork_in_child(self) -> None:
        self._orphans.extend(self._conns.values())
        self._conns = {}
        self._uri_locks = {}
        self._lock = threading.Lock()


_pool = _ConnectionPool()
os.register_at_fork(after_in_child=_pool.after_fork_in_child)


def get_connection(
    target: VirtTarget, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> libvirt.virConnect:
    """The pooled connection for ``target``'s URI, (re)opened if missing or dead.

    The pool is keyed by the checked URI alone: the policy only decides whether the URI
    passes the check. For adapter modules inside ``hosts.virt`` only. Raises ``VirtError``
    subclasses (``HostDriverError`` for a bad URI, ``HostUnreachable``...).
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    return _pool.get(target.checked_uri(), timeout)


def drop_connection(uri: str) -> None:
    """Close and forget the pooled connection for ``uri`` (e.g. after host removal)."""
    _pool.drop(uri)


def close_all() -> None:
    """Close every pooled connection of this process."""
    _pool.close_all()


@dataclass(frozen=True, slots=True)
class HostProbe:
    """What a host told us when we connected to it."""

    uri: str
    hostname: str
    hypervisor_type: str
    hypervisor_version: str
    libvirt_version: str
    arch: str
    cpus: int
    memory_mib: int
    domain_count: int


def format_version(number: int) -> str:
    """libvirt's ``major * 1_000_000 + minor * 1_000 + release`` as ``'4.17.0'``."""
    if number <= 0:
        return "unknown"
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


def _hypervisor_version(conn: libvirt.virConnect) -> int:
    try:
        return int(conn.getVersion())
    except libvirt.libvirtError:
        return 0


def _hostname(conn: libvirt.virConnect, uri: str) -> str:
    try:
        return str(conn.getHostname())
    except libvirt.libvirtError:
        return parse_uri(uri).hostname


def _describe_host(conn: libvirt.virConnect, uri: str) -> HostProbe:
    # getInfo(): [model (the host arch on real hosts), memory MiB, cpus, mhz, ...]
    info = conn.getInfo()
    return HostProbe(
        uri=uri,
        hostname=_hostname(conn, uri),
        hypervisor_type=str(conn.getType()),
        hypervisor_version=format_version(_hypervisor_version(conn)),
        libvirt_version=format_version(int(conn.getLibVersion())),
        arch=str(info[0]),
        cpus=int(info[2]),
        memory_mib=int(info[1]),
        domain_count=len(conn.listAllDomains(0)),
    )


def call_on_own_connection(
    target: VirtTarget,
    work: Callable[[libvirt.virConnect], T],
    *,
    timeout: float,
    what: str,
    action: str,
) -> T:
    """Open a connection of its own to ``target`` (not pooled), return ``work(conn)``, close it.

    For adapter modules inside ``hosts.virt`` only. ``what`` names the whole call in a
    timeout message ("probing"), ``action`` what ``work`` does in a libvirt error's
    ("read the host's details"); both raise ``VirtError`` subclasses.
    """
    checked = target.checked_uri()
    runtime.ensure_event_loop()

    def run() -> T:
        try:
            conn = _open(checked)
        except libvirt.libvirtError as exc:
            raise translate(exc, checked, connecting=True) from exc
        try:
            return work(conn)
        except libvirt.libvirtError as exc:
            raise translate(exc, checked, action=action) from exc
        finally:
            _close_quietly(conn)

    return call_with_timeout(run, timeout=timeout, uri=checked, what=what)


def probe(target: VirtTarget, timeout: float = DEFAULT_PROBE_TIMEOUT) -> HostProbe:
    """Open a fresh (not pooled) connection, describe the host, close it.

    Raises ``HostDriverError`` for a bad URI before connecting, and the other
    ``VirtError`` subclasses for what went wrong while connecting.
    """
    checked = target.checked_uri()
    return call_on_own_connection(
        VirtTarget(checked, target.allow_insecure),
        lambda conn: _describe_host(conn, checked),
        timeout=timeout,
        what="probing",
        action="read the host's details",
    )
