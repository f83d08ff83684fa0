"""Enrolling hosts and testing connections (all libvirt access via hosts.virt)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from hosts.models import Host
from hosts.virt import HostProbe, VirtError, probe
from hosts.virt.networks import NetworkInfo, list_networks
from hosts.virt.networks import create_isolated_network as _create_isolated
from xenweb.audit.services import record


class HostError(Exception):
    """A refusal about hosts, with a message for the user."""


def test_connection(uri: str, *, allow_insecure: bool = False) -> HostProbe:
    """Connect once and describe the host; raises VirtError with what failed."""
    return probe(uri.strip(), allow_insecure=allow_insecure)


def enrol_host(
    *, name: str, uri: str, user: Any, request: Any = None, is_lab: bool = False
) -> Host:
    name, uri = name.strip(), uri.strip()
    if Host.objects.filter(name=name).exists():
        raise HostError(f"A host named '{name}' exists already.")
    if Host.objects.filter(uri=uri).exists():
        raise HostError(f"The host at {uri} is enrolled already.")
    try:
        info = test_connection(uri, allow_insecure=is_lab)
    except VirtError as exc:
        record("host.enrol", user=user, request=request, target_type="hosts.host",
               target_label=name, result="failed", message=str(exc), uri=uri)
        raise
    with transaction.atomic():
        host = Host.objects.create(
            name=name, uri=uri, is_lab=is_lab, state=Host.State.ONLINE,
            state_since=timezone.now(), **probe_fields(info),
        )
        record("host.enrol", user=user, request=request, target=host, uri=uri)
    from hosts.monitor import sync_inventory

    try:
        sync_inventory(host)
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


def networks(host: Host) -> list[NetworkInfo]:
    return list_networks(host.uri, allow_insecure=host.is_lab)


def create_isolated_network(
    host: Host, name: str, bridge: str, *, user: Any, request: Any = None
) -> NetworkInfo:
    try:
        created = _create_isolated(host.uri, name, bridge, allow_insecure=host.is_lab)
    except VirtError as exc:
        record("network.create", user=user, request=request, target=host, result="failed",
               message=str(exc), network=name)
        raise
    record("network.create", user=user, request=request, target=host, network=name,
           bridge=bridge)
    return created
