"""The app's own exceptions for libvirt failures, with plain-English messages.

Nothing outside ``hosts.virt`` ever sees a ``libvirt.libvirtError``: adapter
code calls :func:`translate` and raises the result.
"""

from __future__ import annotations

import re
from typing import Any

import libvirt

from .host_uri import HostUri, parse_uri


class VirtError(Exception):
    """Base class. ``str(e)`` (and ``e.message``) is a sentence meant for humans."""

    def __init__(
        self,
        message: str,
        *,
        uri: str | None = None,
        code: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.uri = uri
        #: libvirt's error code (``VIR_ERR_*``), when the error came from libvirt.
        self.code = code
        #: libvirt's own, more technical message.
        self.detail = detail

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the keyword attributes when pickled (e.g. by Celery).
        return (self.__class__, (self.message,), self.__dict__.copy())


class HostUnreachable(VirtError):
    """DNS failure, connection refused, timeout, no libvirtd, connection lost."""


class HostAuthError(VirtError):
    """Authentication failed or was impossible (SSH keys, TLS certificates, SASL)."""


class HostDriverError(VirtError):
    """Wrong, unsupported or malformed URI, or the hypervisor driver is missing."""


class VirtObjectNotFound(VirtError):
    """A guest, network, pool, volume... does not exist (any more)."""


class VirtOperationError(VirtError):
    """Any other failure of an operation on an existing connection."""


_NOT_FOUND_KINDS: dict[int, str] = {
    libvirt.VIR_ERR_NO_DOMAIN: "Guest",
    libvirt.VIR_ERR_NO_NETWORK: "Network",
    libvirt.VIR_ERR_NO_STORAGE_POOL: "Storage pool",
    libvirt.VIR_ERR_NO_STORAGE_VOL: "Storage volume",
    libvirt.VIR_ERR_NO_INTERFACE: "Host interface",
    libvirt.VIR_ERR_NO_NODE_DEVICE: "Host device",
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT: "Snapshot",
    libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT: "Checkpoint",
    libvirt.VIR_ERR_NO_SECRET: "Secret",
    libvirt.VIR_ERR_NO_NWFILTER: "Network filter",
    libvirt.VIR_ERR_NO_NETWORK_PORT: "Network port",
    libvirt.VIR_ERR_NO_DOMAIN_METADATA: "Guest metadata",
}

_AUTH_CODES = frozenset(
    {
        libvirt.VIR_ERR_AUTH_FAILED,
        libvirt.VIR_ERR_AUTH_CANCELLED,
        libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    }
)

# Error domains of the transport layer: their "system errors" are network trouble.
_TRANSPORT_DOMAINS = frozenset(
    {
        libvirt.VIR_FROM_RPC,
        libvirt.VIR_FROM_REMOTE,
        libvirt.VIR_FROM_SSH,
        libvirt.VIR_FROM_LIBSSH,
    }
)

# Errors that mean "what you asked to open is malformed", when connecting.
_CONFIG_CODES = frozenset(
    {
        libvirt.VIR_ERR_XML_ERROR,
        libvirt.VIR_ERR_XML_DETAIL,
        libvirt.VIR_ERR_INVALID_ARG,
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
        libvirt.VIR_ERR_CONF_SYNTAX,
    }
)

_URI_WORD = re.compile(r"\buri\b", re.IGNORECASE)

_DNS_MARKERS = (
    "name or service not known",
    "could not resolve hostname",
    "unable to resolve address",
    "temporary failure in name resolution",
    "no address associated with hostname",
    "nodename nor servname",
)


def _parsed(uri: str) -> HostUri | None:
    try:
        return parse_uri(uri)
    except ValueError:
        return None


# The names hosts are enrolled under, by URI: messages name a host as its operators do
# ("host 'rack-7'"), not by its address. Filled by whoever knows the name (Host.virt_target).
_NAMES: dict[str, str] = {}


def _name_key(uri: str) -> str:
    scheme, sep, rest = uri.partition(":")
    return scheme.lower() + sep + rest


def name_host(uri: str, name: str) -> None:
    """Name the host behind ``uri`` in this process's messages."""
    if name:
        _NAMES[_name_key(uri)] = name


def host_label(uri: str) -> str:
    """How messages name the host behind ``uri``: ``host 'name'`` when it was named, else
    ``host 'address'`` or ``'uri'``."""
    name = _NAMES.get(_name_key(uri))
    if name:
        return f"host '{name}'"
    parsed = _parsed(uri)
    hostname = parsed.hostname if parsed else ""
    return f"host '{hostname}'" if hostname else f"'{uri}'"


def _detail(exc: libvirt.libvirtError) -> str:
    """libvirt's message, first line only (XML errors add the line and a caret)."""
    message = (exc.get_error_message() or str(exc) or "").strip()
    first_line = message.splitlines()[0] if message else "unknown libvirt error"
    return " ".join(first_line.split())


def _tls_error(detail: str, label: str, kw: dict[str, Any]) -> HostAuthError:
    return HostAuthError(
        f"TLS connection to {label} failed: {detail} (are the appliance's TLS client "
        "certificates installed and trusted by the host?)",
        **kw,
    )


# An SSH server that closed the connection before the session was set up: sshd drops new
# connections at random beyond MaxStartups (unauthenticated connections at once), so this is
# often transient. libssh words it "handshake failed: Socket error: disconnected" (or
# "…: Connection reset by peer"), OpenSSH's ssh "kex_exchange_identification".
_HANDSHAKE_MARKERS = ("handshake failed: socket error", "kex_exchange_identification")


def dropped_during_handshake(message: str) -> bool:
    """Whether libvirt's error text says the SSH server hung up during the handshake."""
    low = message.lower()
    return any(marker in low for marker in _HANDSHAKE_MARKERS)


def _classify_transport(detail: str, uri: str, kw: dict[str, Any]) -> VirtError:
    """Turn a transport-level error (socket, SSH, TLS, RPC) into a VirtError."""
    low = detail.lower()
    label = host_label(uri)
    parsed = _parsed(uri)
    hostname = (parsed.hostname if parsed else "") or uri
    via_ssh = (parsed is not None and parsed.transport == "ssh") or "ssh:" in low

    if any(marker in low for marker in _DNS_MARKERS):
        return HostUnreachable(f"Host name '{hostname}' could not be resolved (DNS)", **kw)
    if "host key verification failed" in low:
        return HostAuthError(
            f"The SSH host key of {label} is unknown or has changed (host key verification "
            "failed); add the host's key to the appliance's known_hosts",
            **kw,
        )
    if "failed to connect socket" in low:
        if "permission denied" in low:
            return HostAuthError(
                f"Not allowed to use the libvirt socket for '{uri}' ({detail})", **kw
            )
        return HostUnreachable(
            f"Cannot reach the libvirt daemon for '{uri}': its socket is not there "
            f"({detail}); is libvirtd running?",
            **kw,
        )
    if "permission denied" in low:
        if via_ssh:
            return HostAuthError(
                f"SSH authentication to {label} failed (permission denied); is the "
                "appliance's public key in the host's authorized_keys?",
                **kw,
            )
        return HostAuthError(f"Access to {label} was denied: {detail}", **kw)
    if "certificate" in low or "gnutls" in low:
        return _tls_error(detail, label, kw)
    if "connection refused" in low:
        if via_ssh:
            return HostUnreachable(
                f"Cannot reach {label} over SSH: connection refused (is sshd running and "
                "is the port right?)",
                **kw,
            )
        return HostUnreachable(
            f"Cannot reach {label}: connection refused (is libvirtd running and listening?)",
            **kw,
        )
    if dropped_during_handshake(low):
        return HostUnreachable(
            f"Cannot reach {label} over SSH: the connection was closed during the SSH "
            "handshake (is it an SSH server on that port, and is it turning new connections "
            "away: sshd's MaxStartups, a firewall?)",
            **kw,
        )
    if "no route to host" in low:
        return HostUnreachable(
            f"Cannot reach {label}: no route to host (host down, or a network or firewall problem)",
            **kw,
        )
    if "network is unreachable" in low:
        return HostUnreachable(f"Cannot reach {label}: network is unreachable", **kw)
    if "keepalive" in low:
        return HostUnreachable(
            f"Lost the connection to {label}: it stopped answering keepalive messages", **kw
        )
    if "timed out" in low or "timeout" in low:
        return HostUnreachable(f"Cannot reach {label}: connection timed out", **kw)
    if "too large" in low and "packet" in low:
        return HostUnreachable(
            f"{label[0].upper()}{label[1:]} answered, but not with the libvirt protocol "
            "(is something other than libvirtd listening on that port?)",
            **kw,
        )
    return HostUnreachable(f"Connection to {label} failed or was lost: {detail}", **kw)


def _connect_error(code: int, detail: str, uri: str, kw: dict[str, Any]) -> VirtError:
    """Errors of opening a connection that no specific rule caught."""
    if code in _CONFIG_CODES or _URI_WORD.search(detail):
        parsed = _parsed(uri)
        if parsed is not None and parsed.driver == "test":
            return HostDriverError(
                f"The test driver could not load the node file of '{uri}': {detail}", **kw
            )
        return HostDriverError(f"Could not open '{uri}': {detail}", **kw)
    return HostUnreachable(f"Could not connect to {host_label(uri)}: {detail}", **kw)


# libvirt's libxl driver says only this when libxl refuses a domain; libxl's reason (a
# kernel or disk image that is not there, too little free memory...) is in its log on dom0.
LIBXL_CREATE_FAILED = "libxenlight failed to create new domain"
LIBXL_LOG = "/var/log/libvirt/libxl/libxl-driver.log"


def _where_libxl_says_why(detail: str) -> str:
    if LIBXL_CREATE_FAILED not in detail:
        return ""
    return (f" (libxl's reason is in {LIBXL_LOG} on the host: often a kernel or disk image "
            "that is not there, or too little free memory for the guest)")


# libvirt's words for causes an operator can act on, and what to say instead (libvirt's
# own text stays in VirtError.detail, which a failed job's log keeps).
KNOWN_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Cannot get interface MTU on '([^']+)': No such device"),
     "the bridge '{0}' of a network interface does not exist there: connect the interface "
     "to a bridge or network the host has"),
    (re.compile(r"[Nn]etwork '([^']+)' is not active"),
     "the network '{0}' is not running there: start it, or connect the interface elsewhere"),
    (re.compile(r"cannot migrate domain with (\d+) snapshots?"),
     "the guest has {0} snapshot(s), and libvirt moves no guest with snapshots: delete or "
     "merge them first"),
    (re.compile(r"Cannot access storage file '([^']+)'"),
     "a disk of the guest is missing there: {0}"),
    (re.compile(r"[Cc]annot allocate memory|[Nn]ot enough (?:free )?memory"),
     "the host has too little free memory for the guest"),
    (re.compile(r"[Dd]omain (?:'[^']+' )?is already running"), "the guest is already running"),
)


def known_cause(detail: str) -> str | None:
    """What libvirt's message means for the operator, where the cause is known."""
    for pattern, words in KNOWN_CAUSES:
        found = pattern.search(detail)
        if found:
            return words.format(*found.groups())
    return None


def translate(
    exc: libvirt.libvirtError,
    uri: str,
    *,
    action: str | None = None,
    connecting: bool = False,
) -> VirtError:
    """Map a libvirt error to the app's exception with a message that says what failed.

    ``action`` (e.g. ``"start guest 'web01'"``) words operation errors;
    ``connecting=True`` says the error came from opening the connection.
    """
    code = exc.get_error_code()
    domain = exc.get_error_domain()
    detail = _detail(exc)
    kw: dict[str, Any] = {"uri": uri, "code": code, "detail": detail}
    label = host_label(uri)

    if code == libvirt.VIR_ERR_NO_CONNECT and domain in _TRANSPORT_DOMAINS:
        # libvirt's libssh transport reports a failed SSH handshake as "no connection
        # driver available for SSH session handshake failed: ...": the network, not a driver.
        return _classify_transport(detail, uri, kw)
    if code == libvirt.VIR_ERR_NO_CONNECT:
        return HostDriverError(
            f"No hypervisor driver for URI '{uri}' (is that hypervisor's libvirt driver "
            f"installed and running on the host?): {detail}",
            **kw,
        )
    if code in _AUTH_CODES:
        reason = detail.removeprefix("authentication failed: ")
        return HostAuthError(f"Authentication to {label} failed: {reason}", **kw)
    if code == libvirt.VIR_ERR_ACCESS_DENIED:
        return HostAuthError(f"Access denied on {label}: {detail}", **kw)
    if code == libvirt.VIR_ERR_NO_SUPPORT:
        return HostDriverError(
            f"The hypervisor driver behind '{uri}' does not support this: {detail}", **kw
        )
    if code == libvirt.VIR_ERR_GNUTLS_ERROR:
        return _tls_error(detail, label, kw)
    if code in _NOT_FOUND_KINDS:
        return VirtObjectNotFound(f"{_NOT_FOUND_KINDS[code]} not found on {label}: {detail}", **kw)
    if code == libvirt.VIR_ERR_INVALID_CONN:
        return HostUnreachable(f"The connection to {label} is closed: {detail}", **kw)
    if code == libvirt.VIR_ERR_RPC or (
        code == libvirt.VIR_ERR_SYSTEM_ERROR and domain in _TRANSPORT_DOMAINS
    ):
        return _classify_transport(detail, uri, kw)
    if connecting:
        return _connect_error(code, detail, uri, kw)
    if action:
        cause = known_cause(detail)
        return VirtOperationError(
            f"Could not {action} on {label}: {cause}." if cause else
            f"Could not {action} on {label}: {detail}{_where_libxl_says_why(detail)}", **kw
        )
    return VirtOperationError(f"Operation failed on {label}: {detail}", **kw)


def describe_error(exc: BaseException, uri: str = "") -> str:
    """A one-line human description of any exception raised around libvirt."""
    if isinstance(exc, VirtError):
        return exc.message
    if isinstance(exc, libvirt.libvirtError):
        return translate(exc, uri).message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
