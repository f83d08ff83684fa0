"""Syntax checks for libvirt connection URIs, done before anything is opened."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from .errors import HostDriverError

MAX_URI_LENGTH = 2048

SECURE_SCHEMES = frozenset({"test", "xen", "xen+ssh", "xen+tls", "qemu", "qemu+ssh", "qemu+tls"})
INSECURE_SCHEMES = frozenset({"xen+tcp", "qemu+tcp"})
ALLOWED_SCHEMES = SECURE_SCHEMES | INSECURE_SCHEMES

# Paths each local driver accepts (libvirt's libxl and qemu drivers).
_DRIVER_PATHS: dict[str, frozenset[str]] = {
    "xen": frozenset({"", "/", "/system"}),
    "qemu": frozenset({"/system", "/session"}),
}

# Remote-driver URI parameters we pass through. Anything else (e.g. ``command``
# for the ext transport) is refused.
_ALLOWED_PARAMS = frozenset(
    {
        "name",
        "no_tty",
        "no_verify",
        "pkipath",
        "keyfile",
        "known_hosts",
        "known_hosts_verify",
        "sshauth",
        "socket",
        "netcat",
        "proxy",
        "mode",
        "tls_priority",
    }
)
_INSECURE_PARAMS = frozenset({"no_verify"})
# known_hosts_verify=normal checks the host key strictly; "auto" adds unknown keys
# silently and "ignore" skips the check: both are as insecure as no_verify.
_SECURE_PARAM_VALUES: dict[str, frozenset[str]] = {"known_hosts_verify": frozenset({"normal"})}

_EXAMPLE = "xen+ssh://root@xen1.example.com/system"


def _check_characters(uri: str) -> None:
    for index, char in enumerate(uri):
        if char.isspace() or unicodedata.category(char).startswith("C"):
            raise HostDriverError(
                f"The host URI contains whitespace or a control character ({char!r} at "
                f"position {index}); remove it",
                uri=uri,
            )
        if not char.isascii():
            raise HostDriverError(
                f"The host URI contains the non-ASCII character {char!r}; "
                "percent-encode it or use the host's ASCII name",
                uri=uri,
            )


def _split(uri: str) -> SplitResult:
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise HostDriverError(f"The host URI is not valid: {exc}") from None
    # Checked first so that no later message repeats the password.
    if parts.password is not None:
        raise HostDriverError(
            "Do not put passwords in the host URI; use SSH keys or TLS certificates"
        )
    try:
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise HostDriverError(f"'{uri}' is not a valid URI: {exc}", uri=uri) from None
    if not parts.scheme:
        raise HostDriverError(
            f"'{uri}' is not a libvirt URI (expected something like {_EXAMPLE})", uri=uri
        )
    return parts


def _check_scheme(uri: str, scheme: str, allow_insecure: bool) -> None:
    if scheme not in ALLOWED_SCHEMES:
        allowed = ", ".join(sorted(ALLOWED_SCHEMES))
        raise HostDriverError(
            f"Unsupported URI scheme '{scheme}' in '{uri}'; use one of: {allowed}", uri=uri
        )
    if scheme in INSECURE_SCHEMES and not allow_insecure:
        driver = scheme.partition("+")[0]
        raise HostDriverError(
            f"'{scheme}' is an unauthenticated, unencrypted transport and is refused; "
            f"use {driver}+ssh or {driver}+tls (or explicitly allow insecure transports)",
            uri=uri,
        )


def _check_test_uri(uri: str, parts: SplitResult) -> None:
    if parts.netloc:
        raise HostDriverError(
            f"The test driver is local only: '{uri}' must not name a host "
            "(use test:///default or test:///absolute/path/to/node.xml)",
            uri=uri,
        )
    if parts.query:
        raise HostDriverError(f"The test driver URI '{uri}' takes no parameters", uri=uri)
    path = unquote(parts.path)
    if path in ("", "/"):
        raise HostDriverError(
            f"'{uri}' names no node file; use test:///default or test:///absolute/path/to/node.xml",
            uri=uri,
        )
    if path == "/default":
        return
    if not os.path.isabs(path):
        raise HostDriverError(
            f"The test driver node file in '{uri}' must be an absolute path", uri=uri
        )
    node_file = Path(path)
    if not node_file.is_file():
        raise HostDriverError(
            f"Test driver node file '{path}' does not exist or is not a file", uri=uri
        )
    if not os.access(node_file, os.R_OK):
        raise HostDriverError(f"Test driver node file '{path}' is not readable", uri=uri)


def _check_params(uri: str, query: str, allow_insecure: bool) -> None:
    try:
        params = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise HostDriverError(f"Malformed parameters in '{uri}'", uri=uri) from None
    for key, value in params:
        if key not in _ALLOWED_PARAMS:
            allowed = ", ".join(sorted(_ALLOWED_PARAMS))
            raise HostDriverError(
                f"Unsupported URI parameter '{key}' in '{uri}' (allowed: {allowed})", uri=uri
            )
        secure_values = _SECURE_PARAM_VALUES.get(key)
        if secure_values is not None and value not in secure_values and not allow_insecure:
            raise HostDriverError(
                f"URI parameter '{key}={value}' turns off host key checks and is refused "
                f"(use {key}={'|'.join(sorted(secure_values))}, or explicitly allow insecure "
                "transports)",
                uri=uri,
            )
        if key in _INSECURE_PARAMS and not allow_insecure:
            raise HostDriverError(
                f"URI parameter '{key}' turns off certificate checks and is refused "
                "(or explicitly allow insecure transports)",
                uri=uri,
            )


def _check_remote(uri: str, parts: SplitResult, scheme: str) -> None:
    driver, _, transport = scheme.partition("+")
    if transport and not parts.hostname:
        raise HostDriverError(
            f"'{uri}' uses the {transport} transport but names no host "
            f"(expected something like {_EXAMPLE})",
            uri=uri,
        )
    if not transport and parts.netloc:
        raise HostDriverError(
            f"'{uri}' names a host but no transport; write {driver}+ssh://... or "
            f"{driver}+tls://...",
            uri=uri,
        )
    if parts.path not in _DRIVER_PATHS[driver]:
        expected = " or ".join(sorted(p for p in _DRIVER_PATHS[driver] if p))
        raise HostDriverError(
            f"No hypervisor driver for URI '{uri}': the {driver} driver expects the path "
            f"{expected}, not '{parts.path}'",
            uri=uri,
        )


def validate_uri(uri: str, allow_insecure: bool = False) -> str:
    """Check a libvirt URI before connecting; return it with the scheme lower-cased.

    Raises :class:`HostDriverError` with a message saying what is wrong.
    """
    if not isinstance(uri, str) or not uri:
        raise HostDriverError("The host URI is empty", uri=str(uri or ""))
    if len(uri) > MAX_URI_LENGTH:
        raise HostDriverError(
            f"The host URI is too long ({len(uri)} characters, at most {MAX_URI_LENGTH})",
            uri=uri[:100],
        )
    _check_characters(uri)
    parts = _split(uri)
    scheme = parts.scheme.lower()
    _check_scheme(uri, scheme, allow_insecure)
    if parts.fragment or uri.endswith("#"):
        raise HostDriverError(f"'{uri}' must not contain a '#' fragment", uri=uri)
    if scheme == "test":
        _check_test_uri(uri, parts)
    else:
        _check_params(uri, parts.query, allow_insecure)
        _check_remote(uri, parts, scheme)
    return scheme + uri[len(parts.scheme) :]
