"""What other code may ask about the enrolled hosts without holding the dom0 trust store:
their network names (to keep P2V away from them) and whether a host key is one of theirs.
Answers only, never the store or the key itself."""

from __future__ import annotations

from hosts.models import Host
from hosts.virt.host_uri import parse_uri
from xenweb.appliance.sshkeys import DOM0_TRUST


def uri_host(uri: str) -> str:
    """The host part of a libvirt URI ('' for a local driver such as xen:///system)."""
    try:
        return parse_uri(uri.strip()).hostname
    except ValueError:
        return ""


def enrolled_names() -> list[tuple[str, str]]:
    """``(host name, address or DNS name)`` of every enrolled host's URI and migration URI;
    a URI without a host part (a local driver) names the appliance itself."""
    found = []
    for name, uri, migration_uri in Host.objects.values_list("name", "uri", "migration_uri"):
        for value in (uri, migration_uri):
            address = uri_host(value) if value else ""
            if address:
                found.append((name, address))
    return found


def _ssh_endpoints() -> set[tuple[str, int]]:
    """``(host, port)`` of every enrolled ``+ssh`` URI and migration URI."""
    found = set()
    for uri, migration_uri in Host.objects.values_list("uri", "migration_uri"):
        for value in (uri, migration_uri):
            try:
                parsed = parse_uri(value.strip()) if value else None
            except ValueError:
                continue
            if parsed is not None and parsed.transport == "ssh" and parsed.hostname:
                found.add((parsed.hostname, parsed.ssh_port))
    return found


def is_enrolled_host_key(fingerprint: str) -> bool:
    """Whether ``fingerprint`` is the host key the appliance trusts for an enrolled host
    (pinned for one of the hosts' SSH endpoints), wherever it is offered now."""
    return any(DOM0_TRUST.pinned(host, port) == fingerprint
               for host, port in _ssh_endpoints())
