"""A libvirt host URI taken apart: the one place that parses ``Host.uri`` (and migration
URIs) for their driver, transport, host, port, user and parameters.

``parse_uri`` only splits; whether a URI is one the appliance accepts is
``hosts.virt.uri.validate_uri``'s question, asked before anything is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

SSH_PORT = 22


@dataclass(frozen=True)
class HostUri:
    scheme: str  # lower case: "xen+ssh", "qemu", "test"
    hostname: str  # lower case, an IPv6 literal without brackets; "" for a local driver
    port: int | None  # None when the URI names none
    user: str  # as written (still percent-encoded); "" when the URI names none
    netloc: str  # as written: [user@]host[:port]
    path: str
    params: tuple[tuple[str, str], ...]  # the query's parameters, in their order

    @property
    def driver(self) -> str:
        """The hypervisor driver: ``xen``, ``qemu`` or ``test``."""
        return self.scheme.partition("+")[0]

    @property
    def transport(self) -> str:
        """How a remote host is reached (``ssh``, ``tls``, ``tcp``...); "" for a local driver."""
        return self.scheme.partition("+")[2]

    @property
    def ssh_port(self) -> int:
        return self.port or SSH_PORT

    def param(self, key: str) -> str | None:
        """The value of the parameter ``key`` (the last one when it is given twice)."""
        found = None
        for name, value in self.params:
            if name == key:
                found = value
        return found


def parse_uri(uri: str) -> HostUri:
    """``uri`` taken apart. Raises ValueError when it cannot be (an unbalanced IPv6
    bracket, a port that is not a number from 0 to 65535)."""
    parts = urlsplit(uri)
    port = parts.port  # ValueError for a bad one
    return HostUri(
        scheme=parts.scheme.lower(),
        hostname=parts.hostname or "",
        port=port,
        user=parts.username or "",
        netloc=parts.netloc,
        path=parts.path,
        params=tuple(parse_qsl(parts.query, keep_blank_values=True)),
    )
