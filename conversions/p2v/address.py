"""Where P2V may connect: a machine that is neither an enrolled host nor the appliance.

An operator starts P2V, and P2V reads whole disks as root: pointed at a dom0 it would copy
the dom0's disks into a volume the operator can download. So before any connection the
source's address is resolved (every A and AAAA record, with the resolver ssh would use)
and refused when any of the addresses, or an IPv4 address embedded in it (IPv4-mapped,
-compatible, 6to4, Teredo, NAT64), is

- unspecified, loopback, link-local, multicast or broadcast;
- an address of this machine (the kernel decides: binding a socket to it works);
- an address of an enrolled host (each host's URI and migration URI, resolved the same way).

ssh and ssh-keyscan are then given the checked address itself, never the name: a second
DNS answer (rebinding) cannot send the connection elsewhere. The source's host key is also
refused when it is one the appliance trusts for an enrolled host (``ssh.confirm_host_key``),
which catches a dom0 reached through an address it was not enrolled with.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import json
import shutil
import socket
import subprocess
from pathlib import Path

from conversions.p2v.ssh import P2VError, Source
from hosts.enrolled import enrolled_names

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAME_MAX = 253
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NONLOCAL_BIND = (Path("/proc/sys/net/ipv4/ip_nonlocal_bind"),
                  Path("/proc/sys/net/ipv6/ip_nonlocal_bind"))


class AddressRefused(P2VError):
    """P2V may not connect to this address; the message says why."""


def parse_address(text: str) -> str:
    """The host name or IP address the user typed, without blanks and IPv6 brackets."""
    address = text.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1].strip()
    if address.endswith(".") and not address.endswith(".."):
        address = address[:-1]  # the absolute form of a name: the same records
    if not address or address.startswith("-") or len(address) > NAME_MAX or any(
            char.isspace() or not char.isprintable() or char in "/\\@[]" for char in address):
        raise AddressRefused("Give the source's host name or IP address (e.g. 192.0.2.10, "
                             "2001:db8::10 or server.example.com).")
    return address


def resolve(address: str, port: int = 22) -> list[IPAddress]:
    """Every address ``address`` resolves to (A and AAAA), in the resolver's order."""
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise AddressRefused(f"{address} cannot be resolved: {exc}") from None
    found: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    if not found:
        raise AddressRefused(f"{address} has no IPv4 or IPv6 address.")
    return found


def forms(ip: IPAddress) -> list[IPAddress]:
    """``ip`` and every IPv4 address embedded in it that a packet to it may reach."""
    found: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        packed = ip.packed
        if packed[:12] == bytes(12) and int(ip) > 1:  # IPv4-compatible ::a.b.c.d
            embedded.append(ipaddress.IPv4Address(packed[12:]))
        if any(ip in network for network in _NAT64):
            embedded.append(ipaddress.IPv4Address(packed[12:]))
        found += [item for item in embedded if item is not None]
    return found


def _nonlocal_bind() -> bool:
    for path in _NONLOCAL_BIND:
        try:
            if path.read_text().strip() != "0":
                return True
        except OSError:
            continue
    return False


def _interface_addresses() -> set[IPAddress]:
    """This machine's interface addresses as ``ip -j addr`` lists them."""
    program = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if program is None:
        raise AddressRefused("This appliance's own addresses cannot be listed (no 'ip'); "
                             "P2V is refused until they can.")
    done = subprocess.run([program, "-j", "addr", "show"], capture_output=True, text=True,
                          timeout=30, check=False)
    found: set[IPAddress] = set()
    for link in json.loads(done.stdout or "[]"):
        for entry in link.get("addr_info", []):
            try:
                found.add(ipaddress.ip_address(str(entry.get("local", "")).split("%")[0]))
            except ValueError:
                continue
    return found


def is_own_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is an address of this machine: the kernel lets a socket bind to it
    (EADDRNOTAVAIL otherwise). With ``ip_nonlocal_bind`` on, every bind works: the
    interface list decides instead."""
    if _nonlocal_bind():
        return ip in _interface_addresses()
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return False  # no IPv6 here: no IPv6 address of this machine either
    with sock:
        try:
            sock.bind((str(ip), 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise AddressRefused(f"Cannot tell whether {ip} is an address of this "
                                 f"appliance ({exc}); P2V is refused.") from None
    return True


def _why_not(ip: IPAddress) -> str | None:
    """Why P2V may not connect to ``ip`` whatever host it is, or None (see ``is_own_address``
    for the appliance's own addresses)."""
    if ip.is_unspecified or (ip.version == 4 and ip in _THIS_NETWORK):
        return "means this machine (an unspecified address)"
    if ip.is_loopback:
        return "is this appliance itself (a loopback address)"
    if ip.is_link_local:
        return "is a link-local address"
    if ip.is_multicast or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")):
        return "is not the address of one machine"
    return None


def _name_key(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


def enrolled_addresses() -> dict[IPAddress, str]:
    """Every address (and embedded IPv4 address) of every enrolled host: its host name."""
    found: dict[IPAddress, str] = {}
    for host_name, address in enrolled_names():
        try:
            resolved = resolve(address)
        except AddressRefused:
            continue  # unresolvable now: matched by name and by host key instead
        for ip in resolved:
            for form in forms(ip):
                found.setdefault(form, host_name)
    return found


def check_address(address: str, port: int = 22) -> IPAddress:
    """The address P2V connects to for ``address``, after every check; ``AddressRefused``
    names the first reason it may not."""
    address = parse_address(address)
    for host_name, enrolled in enrolled_names():
        if _name_key(enrolled) == _name_key(address):
            raise AddressRefused(f"P2V refuses {address}: it is the enrolled host "
                                 f"{host_name}, and P2V never copies a managed host.")
    resolved = resolve(address, port)
    managed = enrolled_addresses()
    for ip in resolved:
        shown = address if str(ip) == address else f"{address} ({ip})"
        embedded = forms(ip)
        for form in embedded:
            why = _why_not(form)
            if why is not None:
                raise AddressRefused(f"P2V refuses {shown}: {form} {why}.")
        for form in embedded:
            if is_own_address(form):
                raise AddressRefused(f"P2V refuses {shown}: {form} is an address of this "
                                     "appliance itself.")
            if form in managed:
                raise AddressRefused(f"P2V refuses {shown}: {form} is an address of the "
                                     f"enrolled host {managed[form]}, and P2V never copies "
                                     "a managed host.")
    return resolved[0]


def checked(source: Source) -> Source:
    """``source`` with the address it connects to, checked (see ``check_address``)."""
    ip = check_address(source.address, source.port)
    return dataclasses.replace(source, address=parse_address(source.address),
                               connect_to=str(ip))
