"""Enrolling hosts and testing connections (all libvirt access via hosts.virt)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.db import transaction
from django.utils import timezone

from hosts.models import Host
from hosts.signals import host_enrolled
from hosts.virt import HostProbe, VirtError, VirtTarget, parse_uri, probe
from hosts.virt.networks import NetworkInfo, list_networks
from hosts.virt.networks import create_isolated_network as _create_isolated
from xenweb.appliance.sshkeys import DOM0_TRUST, HostKeyError, HostKeyMismatch
from xenweb.audit.services import record


class HostError(Exception):
    """A refusal about hosts, with a message for the user."""


def test_connection(target: VirtTarget) -> HostProbe:
    """Connect once and describe the host; raises VirtError with what failed."""
    return probe(replace(target, uri=target.uri.strip()))


def _uses_ssh(uri: str) -> bool:
    try:
        return parse_uri(uri).transport == "ssh"
    except ValueError:
        return False


def ssh_endpoint(uri: str) -> tuple[str, int]:
    """``(host, port)`` of an ``+ssh`` URI, as its host key is pinned."""
    try:
        parsed = parse_uri(uri)
    except ValueError as exc:
        raise HostError(f"'{uri}' is not a valid URI: {exc}") from None
    return parsed.hostname, parsed.ssh_port


def check_host_key(uri: str, fingerprint: str | None = None) -> str | None:
    """For ``+ssh`` URIs: the host key the host offers, checked against the pinned one.

    ``fingerprint`` (``SHA256:…``) is one the user confirmed: the key must match it and is
    then pinned. Without it, the key is trusted on first contact and pinned; a key that
    differs from the pinned one is refused. Pins live in the dom0 trust store
    (``$XENWEB_DATA_DIR/ssh/known_hosts``), the only known_hosts libvirt is given
    (``hosts.virt.connection``); P2V has a store of its own and never writes this one.
    Raises ``HostError`` with a message that names both fingerprints on a mismatch, or
    when the key cannot be read (``None`` is returned instead when ``fingerprint`` is None:
    the connection attempt that follows then says what is wrong, e.g. connection refused).
    """
    host, port = ssh_endpoint(uri)
    try:
        return DOM0_TRUST.verify(host, port, fingerprint)
    except HostKeyMismatch as exc:
        raise HostError(str(exc)) from exc
    except HostKeyError as exc:
        if fingerprint is not None:
            raise HostError(str(exc)) from exc
        return None


REPIN_PERMISSION = "hosts.change_host"  # administrators only


def pinned_host_key(host: Host) -> str | None:
    """The fingerprint the appliance trusts for an ``+ssh`` host (None: none, or no SSH)."""
    if not _uses_ssh(host.uri):
        return None
    address, port = ssh_endpoint(host.uri)
    return DOM0_TRUST.pinned(address, port)


def repin_host_key(host: Host, fingerprint: str, *, user: Any, request: Any = None) -> str:
    """Trust the key an enrolled host offers now, after an administrator compared it with
    ``fingerprint`` (e.g. a reinstalled dom0). The offered key must match it; the audit
    record ``host.host_key`` keeps the old and the new fingerprint."""
    if user is None or not user.has_perm(REPIN_PERMISSION):
        raise PermissionError("Only an administrator can change the host key a host is "
                              "trusted with.")
    if not _uses_ssh(host.uri):
        raise HostError(f"{host.name} is not reached over SSH ({host.uri}): it has no host "
                        "key to pin.")
    address, port = ssh_endpoint(host.uri)
    old = DOM0_TRUST.pinned(address, port)
    try:
        new = DOM0_TRUST.verify(address, port, fingerprint)
    except HostKeyError as exc:
        record("host.host_key", user=user, request=request, target=host, result="failed",
               message=str(exc), old_fingerprint=old, given_fingerprint=fingerprint[:100])
        raise HostError(str(exc)) from exc
    record("host.host_key", user=user, request=request, target=host, old_fingerprint=old,
           new_fingerprint=new)
    return new


def _check_enrolment_key(uri: str, fingerprint: str | None, *, name: str, user: Any,
                         request: Any) -> None:
    """``check_host_key`` for an enrolment (administrators only, see hosts.views/api); a
    confirmed key that replaces another pin is audited with both fingerprints."""
    address, port = ssh_endpoint(uri)
    old = DOM0_TRUST.pinned(address, port)
    new = check_host_key(uri, fingerprint)
    if old is not None and new is not None and old != new:
        record("host.host_key", user=user, request=request, target_type="hosts.host",
               target_label=name, uri=uri, old_fingerprint=old, new_fingerprint=new)


def enrol_host(
    *,
    name: str,
    uri: str,
    user: Any,
    request: Any = None,
    is_lab: bool = False,
    allow_insecure_transport: bool = False,
    files_local: bool = False,
    host_key_fingerprint: str | None = None,
) -> Host:
    """Enrol a host after a test connection.

    ``is_lab`` only records who registered the host; what the app may do with it are the
    capabilities ``allow_insecure_transport`` (a URI without TLS or SSH host-key pinning)
    and ``files_local`` (its pool paths are this machine's files), see ``Host``.

    For ``+ssh`` URIs the host key is checked first (``check_host_key``): pass the
    fingerprint the user confirmed as ``host_key_fingerprint``; without it the key is
    pinned on first contact.
    """
    name, uri = name.strip(), uri.strip()
    if Host.objects.filter(name=name).exists():
        raise HostError(f"A host named '{name}' exists already.")
    if Host.objects.filter(uri=uri).exists():
        raise HostError(f"The host at {uri} is enrolled already.")
    try:
        target = VirtTarget(uri, allow_insecure_transport)
        target.checked_uri()
        if _uses_ssh(uri):
            _check_enrolment_key(uri, host_key_fingerprint, name=name, user=user,
                                 request=request)
        info = test_connection(target)
    except HostError as exc:
        record("host.enrol", user=user, request=request, target_type="hosts.host",
               target_label=name, result="failed", message=str(exc), uri=uri)
        raise
    except VirtError as exc:
        record("host.enrol", user=user, request=request, target_type="hosts.host",
               target_label=name, result="failed", message=str(exc), uri=uri)
        raise
    with transaction.atomic():
        host = Host.objects.create(
            name=name, uri=uri, is_lab=is_lab, allow_insecure_transport=allow_insecure_transport,
            files_local=files_local, state=Host.State.ONLINE,
            state_since=timezone.now(), **probe_fields(info),
        )
        record("host.enrol", user=user, request=request, target=host, uri=uri)
    try:
        host_enrolled.send(sender=Host, host=host)  # the inventory syncs it (inventory.apps)
    except VirtError as exc:  # enrolled all the same; the watcher retries
        host.last_error = str(exc)
        host.save(update_fields=["last_error"])
    return host


def probe_fields(info: HostProbe) -> dict[str, Any]:
    return {
        "hostname": info.hostname,
        "hypervisor_type": info.hypervisor_type,
        "hypervisor_version": info.hypervisor_version,
        "libvirt_version": info.libvirt_version,
        "arch": info.arch,
        "cpus": info.cpus,
        "memory_mib": info.memory_mib,
    }


def set_maintenance(host: Host, enabled: bool, *, user: Any, request: Any = None) -> Host:
    host.state = Host.State.MAINTENANCE if enabled else Host.State.ONLINE
    host.state_since = timezone.now()
    host.save(update_fields=["state", "state_since"])
    record("host.maintenance", user=user, request=request, target=host, enabled=enabled)
    return host


def set_migration_uri(host: Host, uri: str, *, user: Any, request: Any = None) -> Host:
    """How other hosts' libvirtd reach this one for peer-to-peer migration (typically its
    address on a storage or migration network); empty: its enrolment URI."""
    uri = uri.strip()
    if uri:
        uri = VirtTarget(uri, host.allow_insecure_transport).checked_uri()
        driver = parse_uri(host.uri).driver
        if parse_uri(uri).driver != driver:
            raise HostError(f"The migration URI must use the host's own driver "
                            f"('{driver}', as in {host.uri}).")
    host.migration_uri = uri
    host.save(update_fields=["migration_uri"])
    record("host.migration_uri", user=user, request=request, target=host, uri=uri)
    return host


def networks(host: Host) -> list[NetworkInfo]:
    return list_networks(host.virt_target)


def create_isolated_network(
    host: Host, name: str, bridge: str, *, user: Any, request: Any = None
) -> NetworkInfo:
    try:
        created = _create_isolated(host.virt_target, name, bridge)
    except VirtError as exc:
        record("network.create", user=user, request=request, target=host, result="failed",
               message=str(exc), network=name)
        raise
    record("network.create", user=user, request=request, target=host, network=name,
           bridge=bridge)
    return created
