"""What a guest's network interface can join on a host: its Linux bridges and its active
libvirt networks. The create form offers these, and a NIC naming anything else is refused
before libvirt's "Cannot get interface MTU on 'xenbr0': No such device" at the first start.
"""

from __future__ import annotations

from dataclasses import dataclass

from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt.networks import NetworkInfo, list_bridges, list_networks


class NicRefused(Exception):
    """The NIC's bridge or network is not on the host; the message says what is."""


@dataclass(frozen=True)
class GuestNetworks:
    host: str
    bridges: tuple[str, ...]  # the host's Linux bridges, but those libvirt's networks manage
    networks: tuple[NetworkInfo, ...]  # active libvirt networks
    bridges_listed: bool  # False: the host's libvirtd has no interface driver

    def known_bridges(self) -> set[str]:
        return set(self.bridges) | {net.bridge for net in self.networks if net.bridge}

    def offered(self) -> str:
        parts = []
        if self.bridges:
            parts.append(f"bridges {', '.join(self.bridges)}")
        if self.networks:
            parts.append(f"networks {', '.join(net.name for net in self.networks)}")
        return " and ".join(parts) or "no bridge or network (an administrator creates one " \
                                      "on the host's page)"

    def check(self, *, bridge: str = "", network: str = "") -> None:
        """Refuse a NIC whose bridge or network this host does not have."""
        if network:
            if network not in {net.name for net in self.networks}:
                raise NicRefused(f"Host '{self.host}' has no active network '{network}': it "
                                 f"has {self.offered()}.")
        elif bridge and bridge not in self.known_bridges():
            unlisted = "" if self.bridges_listed else (
                " (its libvirtd cannot list host bridges: only the bridges of its libvirt "
                "networks are known)")
            raise NicRefused(f"Host '{self.host}' has no bridge '{bridge}'{unlisted}: it has "
                             f"{self.offered()}.")


def guest_networks(host: Host) -> GuestNetworks:
    """Raises VirtError when the host cannot be asked."""
    networks = tuple(net for net in list_networks(host.virt_target) if net.active)
    listed = list_bridges(host.virt_target)
    # Bridges libvirt made for its own NAT, routed or isolated networks are offered as
    # those networks; a host bridge that a forward-bridge network merely names stays one.
    managed = {net.bridge for net in networks if net.forward_mode != "bridge"}
    bridges = tuple(name for name in listed or () if name not in managed)
    return GuestNetworks(host=host.name, bridges=bridges, networks=networks,
                         bridges_listed=listed is not None)


def check_nics(host: Host, nics: list[dict[str, str]]) -> None:
    """Refuse NICs (dicts with `bridge` or `network`) the host cannot connect."""
    if not nics:
        return
    try:
        offered = guest_networks(host)
    except VirtError as exc:
        raise NicRefused(f"The networks of host '{host}' cannot be read: {exc}") from exc
    for nic in nics:
        offered.check(bridge=nic.get("bridge", ""), network=nic.get("network", ""))
