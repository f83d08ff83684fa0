"""Host capabilities as the app stores and uses them (placement, the create wizard)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt.capabilities import HVM_UNAVAILABLE, host_capabilities, host_resources

TYPE_LABELS = {"xen": "PV", "hvm": "HVM", "xenpvh": "PVH"}


class CapabilityError(Exception):
    """The host cannot run what was asked for; the message says why."""


def refresh_capabilities(host: Host) -> dict[str, Any]:
    caps = host_capabilities(host.virt_target)
    host.capabilities = {
        **asdict(caps),
        "guest_types": list(caps.guest_types()),
        "pae": caps.pae,
    }
    refresh_resources(host)
    return host.capabilities


def refresh_resources(host: Host) -> None:
    """Free memory (changes all the time) and the per-guest vCPU limit."""
    resources = host_resources(host.virt_target)
    host.capabilities = {**host.capabilities, **asdict(resources)}
    host.save(update_fields=["capabilities"])


def refresh_capabilities_quietly(host: Host) -> None:
    try:
        refresh_capabilities(host)
    except VirtError:
        pass  # the host is marked unreachable elsewhere


def domain_type_for(host: Host, os_type: str) -> str:
    """The libvirt domain type that runs `os_type` guests on this host.

    Refuses before anything is created when the host cannot: an HVM guest on a host
    without VT-x/AMD-V gets the message operators know from Xen.
    """
    guests = host.capabilities.get("guests") or refresh_capabilities(host)["guests"]
    offered = [g for g in guests if g["os_type"] == os_type]
    if not offered:
        if os_type == "hvm":
            raise CapabilityError(HVM_UNAVAILABLE)
        label = TYPE_LABELS.get(os_type, os_type)
        raise CapabilityError(f"Host '{host}' cannot run {label} guests.")
    domain_types = [d for g in offered for d in g["domain_types"]]
    for preferred in ("xen", "kvm", "qemu", "test"):
        if preferred in domain_types:
            return preferred
    return domain_types[0]


def offered_types(host: Host) -> list[tuple[str, str]]:
    types = host.capabilities.get("guest_types", [])
    return [(t, TYPE_LABELS.get(t, t)) for t in types]
