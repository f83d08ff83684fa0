"""Where a guest's VNC server is and how the proxy reaches it: directly over TCP or a local
UNIX socket, or through an SSH tunnel to the guest's host (the tunnel itself is
guests.console.tunnel); ``+tls`` hosts are refused.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from guests.console.sessions import Ending, GuestSessionTarget, gone
from hosts.virt import VirtError, VirtObjectNotFound, parse_uri
from hosts.virt.graphics import VncEndpoint, vnc_endpoint
from hosts.virt.ssh import host_login, ssh_argv
from xenweb.ws_base import CLOSE_CONSOLE_ERROR, CLOSE_GUEST_STOPPED, CLOSE_NO_CONSOLE

CONNECT_TIMEOUT = 15.0
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 (read, not bound)


class VncUnavailable(Exception):
    """The guest's VNC server cannot be reached this way; carries the Ending to report."""

    def __init__(self, ending: Ending) -> None:
        super().__init__(ending.message)
        self.ending = ending


@dataclass(frozen=True)
class Route:
    """How to reach the VNC server: ``tcp`` (address, port), ``unix`` (address is the
    socket's path) or ``ssh`` (argv of the tunnel)."""

    kind: str
    address: str = ""
    port: int = 0
    argv: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        if self.kind == "ssh":
            return "ssh"
        return "socket" if self.kind == "unix" else "direct"


def transport_problem(uri: str) -> str:
    """Why the graphical console of this host's guests cannot work at all, or ''."""
    if parse_uri(uri).transport == "tls":
        return ("The graphical console is not available yet for guests on hosts reached over "
                "TLS (a +tls:// URI): only local hosts, lab hosts and SSH hosts (+ssh://) "
                "can carry it.")
    return ""


def _connect_address(listen: str, fallback: str) -> str:
    """The address to dial for a server listening on ``listen`` (a wildcard means any
    address of the host: the loopback one, or ``fallback`` when given)."""
    if listen in WILDCARDS:
        return fallback or WILDCARDS[listen]
    return listen


def host_and_port(address: str, port: int) -> str:
    """``address:port``, an IPv6 address in brackets (for ``ssh -W`` and messages)."""
    try:
        is_v6 = ipaddress.ip_address(address).version == 6
    except ValueError:
        is_v6 = False
    return f"[{address}]:{port}" if is_v6 else f"{address}:{port}"


def plan_route(target: GuestSessionTarget, endpoint: VncEndpoint) -> Route:
    """The route to the guest's VNC server (raises VncUnavailable with the reason); for
    +ssh, with the appliance's login for the host (which may make its key pair)."""
    parsed = parse_uri(target.host_uri)
    transport = parsed.transport
    if endpoint.socket:
        if transport:
            raise VncUnavailable(Ending(
                "unsupported", f"The VNC server of {target.name} listens on a UNIX socket on "
                f"{target.host_name}; only the host itself can reach it.", CLOSE_NO_CONSOLE))
        return Route("unix", address=endpoint.socket)
    if endpoint.port is None or endpoint.port <= 0:
        raise VncUnavailable(Ending(
            "no-port", f"The VNC server of {target.name} has no TCP port (its graphics listen "
            "nowhere).", CLOSE_NO_CONSOLE))
    if not transport or (target.allow_insecure_transport and transport == "tcp"):
        address = _connect_address(endpoint.listen, parsed.hostname)
        return Route("tcp", address=address, port=endpoint.port)
    if transport == "ssh":
        argv = ssh_argv(
            host_login(parsed), parsed.hostname, user=parsed.user or "root",
            port=parsed.ssh_port,
            options=["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(CONNECT_TIMEOUT)}",
                     "-o", "ServerAliveInterval=15",
                     "-W", host_and_port(_connect_address(endpoint.listen, ""), endpoint.port)],
        )
        return Route("ssh", address=parsed.hostname, port=endpoint.port, argv=tuple(argv))
    raise VncUnavailable(Ending(
        "unsupported", transport_problem(target.host_uri)
        or f"The graphical console cannot reach hosts over {transport}.", CLOSE_NO_CONSOLE))


def _management_domain(target: GuestSessionTarget) -> Ending:
    return Ending("no-vnc", f"{target.name} is the host's management domain: it has no "
                  "graphical console here.", CLOSE_NO_CONSOLE)


def resolve(target: GuestSessionTarget) -> Route:
    """Blocking (libvirt, maybe ssh-keygen): the route to the guest's live VNC server.
    Raises VncUnavailable when there is nothing to connect to."""
    if target.is_privileged:
        raise VncUnavailable(_management_domain(target))
    problem = transport_problem(target.host_uri)
    if problem:
        raise VncUnavailable(Ending("unsupported", problem, CLOSE_NO_CONSOLE))
    try:
        endpoint = vnc_endpoint(target.virt_target, target.uuid)
    except VirtObjectNotFound:
        raise VncUnavailable(gone(target)) from None
    except VirtError as exc:
        raise VncUnavailable(Ending("error", str(exc), CLOSE_CONSOLE_ERROR)) from None
    if endpoint.is_privileged:
        raise VncUnavailable(_management_domain(target))
    if not endpoint.has_vnc:
        raise VncUnavailable(Ending(
            "no-vnc", f"{target.name} has no VNC graphics: add a VNC graphics device to the "
            "guest to use its graphical console.", CLOSE_NO_CONSOLE))
    if not endpoint.active:
        raise VncUnavailable(Ending(
            "not-running", f"The guest {target.name} is not running ({endpoint.state}); its "
            "graphical console opens when it starts.", CLOSE_GUEST_STOPPED))
    return plan_route(target, endpoint)


def where(route: Route) -> str:
    """Where the route dials, for messages: the socket's path or ``address:port``."""
    if route.kind == "unix":
        return route.address
    return host_and_port(route.address, route.port)
