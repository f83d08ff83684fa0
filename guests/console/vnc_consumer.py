"""`/ws/guests/<pk>/vnc/`: a guest's graphical console (VNC) for noVNC in the browser.

A websocket proxy: binary frames carry raw RFB bytes both ways between noVNC (subprotocol
``binary``) and the guest's VNC server on its host. Where the server is comes from the
guest's *live* domain XML (``hosts.virt.graphics``: with autoport, the cached port is stale
or -1); how it is reached depends on the host's URI:

- local hosts (``xen:///``, ``qemu:///``, ``test:///``) and ``+tcp`` hosts allowed an
  insecure transport (``Host.allow_insecure_transport``: the lab's, whose VNC servers listen
  on 127.0.0.1 in our own network namespace): a direct TCP connection (or the UNIX
  socket, for a socket listener on a local host);
- ``+ssh`` hosts: an SSH tunnel, ``ssh -i <appliance key> -o BatchMode=yes -p PORT
  -l USER -- HOST -W LISTEN:PORT`` as a subprocess whose stdin/stdout are the byte stream;
  logged in and checked as libvirt's connection is (``hosts.virt.ssh.host_login``: the
  appliance's key, the host key checked strictly against the appliance's own known_hosts,
  the URI's ``keyfile``/``known_hosts`` win);
- ``+tls`` hosts: refused for now (the page says so).

Text frames from the server are JSON status messages (vnc.js keeps them away from noVNC):

- ``{"type": "vnc.status", "state": "connected", "view_only": bool, "via": ..., ...}`` once
  the VNC server is reached, before its first byte;
- ``{"type": "vnc.closed", "reason": ..., "message": ...}`` just before the server closes the
  socket, with one of the ``CLOSE_*`` codes of ``xenweb.ws_base``.

Watching needs ``guests.view_guest``, interacting ``guests.change_guest``. A viewer's
session is view-only on the server too: its client→server bytes go through
``ViewerInputFilter``, which forwards the RFB handshake and the messages that only shape
the picture, and drops keyboard, pointer, clipboard, resize and power (XVP) messages.

The parts, beside this consumer: ``rfb`` (the view-only filter), ``route`` (where the VNC
server is and how to reach it), ``tunnel`` (the byte pipe) and ``diagnosis`` (why a
session ended).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from guests.console.diagnosis import diagnose
from guests.console.rfb import RfbFilterError, ViewerInputFilter
from guests.console.route import Route, VncUnavailable, resolve, where
from guests.console.sessions import Ending, GuestSessionConsumer, GuestSessionTarget
from guests.console.tunnel import CHUNK, Tunnel, open_tunnel
from xenweb.ws_base import CLOSE_REFUSED_INPUT

logger = logging.getLogger(__name__)

SUBPROTOCOL = "binary"


class GuestVncConsumer(GuestSessionConsumer):
    """Relays one websocket (noVNC) to one connection to a guest's VNC server."""

    kind = "vnc"
    title = "graphical console"
    restricted = "view-only"
    subprotocol = SUBPROTOCOL
    tunnel: Tunnel | None = None
    input_filter: ViewerInputFilter | None = None

    async def start(self, user: Any, target: GuestSessionTarget) -> None:
        try:
            route = await asyncio.to_thread(resolve, target)
        except VncUnavailable as exc:
            await self._end(exc.ending)
            return
        try:
            self.tunnel = await open_tunnel(target, route)
        except OSError as exc:  # TimeoutError included
            detail = (f"Cannot reach the VNC server of {target.name} at {where(route)}: "
                      f"{getattr(exc, 'strerror', None) or str(exc) or 'timed out'}.")
            await self._end(await asyncio.to_thread(diagnose, target, detail))
            return
        if not target.may_act:
            self.input_filter = ViewerInputFilter()
        await self.opened(user, target, view_only=not target.may_act, via=route.label)
        self.pump = asyncio.create_task(self._pump(self.tunnel, target, route))

    async def disconnect(self, code: int) -> None:
        self.ending = True
        await self.stop_pump()
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None:
            try:
                await tunnel.close()
            except Exception:  # never let cleanup fail the disconnect
                logger.exception("closing the VNC tunnel failed")

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        """RFB bytes from noVNC to the VNC server (a viewer's through the filter)."""
        if not bytes_data or self.tunnel is None or self.target is None or self.ending:
            return
        data = bytes_data
        if self.input_filter is not None:
            try:
                data = self.input_filter.client(data)
            except RfbFilterError as exc:
                await self._end(Ending("refused", str(exc), CLOSE_REFUSED_INPUT))
                return
            if not data:
                return
        try:
            await self.tunnel.write(data)
        except (OSError, RuntimeError) as exc:  # the pump sees the end and reports it
            logger.info("VNC write to %s failed: %s", self.target.name, exc)

    async def _pump(self, tunnel: Tunnel, target: GuestSessionTarget, route: Route) -> None:
        """VNC server bytes to the browser until the server (or the tunnel) ends."""
        received = 0
        detail = ""
        try:
            while True:
                data = await tunnel.reader.read(CHUNK)
                if not data:
                    break
                received += len(data)
                if self.input_filter is not None:
                    self.input_filter.server(data)
                if self.ending:
                    return
                await self.send(bytes_data=data)
        except asyncio.CancelledError:
            raise
        except OSError as exc:
            detail = str(exc)
        except Exception:  # a bug: end the session visibly rather than hang silently
            logger.exception("VNC proxy of %s: the pump failed", target.name)
            detail = "The graphical console ended unexpectedly."
        if self.tunnel is not tunnel or self.ending:  # disconnected meanwhile
            return
        said = await tunnel.failure()
        if route.kind == "ssh" and not received:
            detail = f"The SSH tunnel to {target.host_name} failed" + (f": {said}" if said
                                                                         else ".")
        elif not detail:
            detail = f"The VNC server of {target.name} closed the connection."
        self.pump = None  # finished: disconnect() must not wait for itself
        await self._end(await asyncio.to_thread(diagnose, target, detail))
