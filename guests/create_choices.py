"""What the create form offers for one host: its guest types (the others with the reason),
its pools, free volumes, ISO images, boot files, bridges and networks, and the bounds of
vCPUs and memory. The request is checked against the same host again when it comes in
(guests.create), so the form only saves the operator a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from guests.create_request import MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB
from guests.placement.automatic import HEADROOM_MIB, free_memory_mib
from hosts.capabilities import CapabilityError, domain_type_for
from hosts.guest_networks import GuestNetworks, guest_networks
from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt import domain_xml as dx
from storage import bootfiles
from storage.attachments import free_for_a_disk
from storage.iso_library import iso_images
from storage.models import Pool, Volume

TYPES = (("hvm", "HVM (full virtualisation, needs VT-x/AMD-V)"),
         ("pv", "PV (paravirtualised, adapted kernel)"),
         ("pvh", "PVH"))


@dataclass(frozen=True)
class TypeChoice:
    value: str
    label: str
    reason: str  # empty when the host can run it


@dataclass
class CreateChoices:
    host: Host
    types: list[TypeChoice]
    pools: QuerySet[Pool]
    volumes: QuerySet[Volume]
    isos: QuerySet[Volume]
    boot_files: QuerySet[Volume]
    boot_volumes: QuerySet[Volume]
    networks: GuestNetworks | None
    networks_error: str = ""
    max_vcpus: int = MAX_VCPUS
    max_memory_mib: int = MAX_MEMORY_MIB
    free_memory_mib: int = 0

    @property
    def min_memory_mib(self) -> int:
        return MIN_MEMORY_MIB

    def nic_values(self) -> set[str]:
        if self.networks is None:
            return {""}
        return {"", *(f"bridge:{name}" for name in self.networks.bridges),
                *(f"network:{net.name}" for net in self.networks.networks)}

    @property
    def default_nic(self) -> str:
        """The form's first choice: the host's first bridge, else its first network."""
        if self.networks is None:
            return ""
        if self.networks.bridges:
            return f"bridge:{self.networks.bridges[0]}"
        return f"network:{self.networks.networks[0].name}" if self.networks.networks else ""


def vcpu_limit(host: Host) -> int:
    """The most vCPUs one guest may have on the host (the driver's limit, else the API's)."""
    return min(int(host.capabilities.get("max_vcpus") or MAX_VCPUS), MAX_VCPUS)


def memory_limit(host: Host) -> int:
    """The most memory one guest may have on the host: its RAM, where known."""
    return min(host.memory_mib or MAX_MEMORY_MIB, MAX_MEMORY_MIB)


def _type_reason(host: Host, value: str) -> str:
    try:
        domain_type_for(host, dx.GUEST_TYPES[value])
    except CapabilityError as exc:
        return str(exc)
    except VirtError as exc:
        return f"The capabilities of host '{host}' cannot be read: {exc}"
    return ""


def suggested_host(hosts: QuerySet[Host]) -> Host | None:
    """Where automatic placement would look first: the online host with the most free
    memory, else the first host."""
    online = [host for host in hosts if host.state == Host.State.ONLINE]
    if online:
        return max(online, key=free_memory_mib)
    return hosts.first()


def choices_for(host: Host) -> CreateChoices:
    try:
        networks, networks_error = guest_networks(host), ""
    except VirtError as exc:
        networks, networks_error = None, f"The networks of host '{host}' cannot be read: {exc}"
    boot_pool = bootfiles.boot_pool(host)
    free = free_memory_mib(host)
    return CreateChoices(
        host=host,
        types=[TypeChoice(value, label, _type_reason(host, value)) for value, label in TYPES],
        pools=Pool.objects.filter(host=host, active=True).exclude(
            pk=getattr(boot_pool, "pk", None)).order_by("name"),
        volumes=free_for_a_disk(host.pk).exclude(pool=boot_pool),
        isos=iso_images(host),
        boot_files=bootfiles.offered(host),
        boot_volumes=Volume.objects.select_related("pool__host").filter(
            pool__host=host, pool__active=True, format__in=("raw", "")).exclude(
            pool=boot_pool).order_by("pool__name", "name"),
        networks=networks, networks_error=networks_error,
        max_vcpus=vcpu_limit(host), max_memory_mib=memory_limit(host),
        free_memory_mib=max(free - HEADROOM_MIB, 0),
    )


def bound_problems(host: Host, data: dict[str, Any]) -> list[str]:
    """The request's vCPUs and memory against what one guest may have on the host."""
    problems = []
    vcpus = max(data["vcpus"], data.get("max_vcpus") or 0)
    limit = vcpu_limit(host)
    if vcpus > limit:
        problems.append(f"Host '{host}' allows at most {limit} vCPUs per guest.")
    if host.memory_mib and data["memory_mib"] > host.memory_mib:
        problems.append(f"Host '{host}' has {host.memory_mib} MiB of memory: a guest gets at "
                        "most that.")
    return problems
