"""Where a guest's graphical console (VNC) listens, read from its live domain XML.

With ``autoport`` the port in the stored XML is -1 (or the port of an earlier run): only the
live XML of a running guest says where its VNC server listens now. The listen address is the
one on the guest's host; how to reach it (directly or through an SSH tunnel) is the caller's
business (guests.console.route).
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from .connection import get_connection
from .domain_xml import parse_domain_xml
from .domains import DOM0_NAME, STATE_NAMES
from .errors import translate
from .target import VirtTarget

__all__ = ["VncEndpoint", "vnc_endpoint"]


@dataclass(frozen=True)
class VncEndpoint:
    """A guest's VNC server as libvirt describes it right now."""

    name: str
    state: str  # running, paused, shutoff... (domains.STATE_NAMES)
    active: bool  # the domain runs (running, paused, blocked...): its VNC server exists
    has_vnc: bool  # the domain has <graphics type='vnc'>
    port: int | None  # the live TCP port; None when unassigned (not running) or a socket
    listen: str  # the listen address on the host ('' when libvirt's default applies)
    socket: str  # the UNIX socket's path when VNC listens on one, else ''
    is_privileged: bool  # Xen's Domain-0


def vnc_endpoint(target: VirtTarget, uuid: str) -> VncEndpoint:
    """Read the guest's live VNC endpoint (raises the VirtError family)."""
    conn = get_connection(target)
    try:
        dom = conn.lookupByUUIDString(uuid)
        name = dom.name()
        state, _reason = dom.state()
        active = bool(dom.isActive())
        dom_id = dom.ID()
        xml = parse_domain_xml(dom.XMLDesc(0))  # the live XML while the guest runs
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"read the graphics of guest {uuid}") from exc
    listen = xml.vnc_listen or ""
    socket = listen if listen.startswith("/") else ""
    return VncEndpoint(
        name=name,
        state=STATE_NAMES.get(state, "unknown"),
        active=active,
        has_vnc=xml.vnc_listen is not None,
        port=xml.vnc_port if active and not socket else None,
        listen="" if socket else listen,
        socket=socket,
        is_privileged=name == DOM0_NAME or (dom_id == 0 and xml.domain_type == "xen"),
    )
