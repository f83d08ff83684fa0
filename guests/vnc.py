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
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from guests.sessions import Ending, GuestSessionConsumer, GuestSessionTarget
from hosts.virt import VirtError, VirtObjectNotFound, parse_uri
from hosts.virt import domains as virt
from hosts.virt.graphics import VncEndpoint, vnc_endpoint
from hosts.virt.ssh import host_login, ssh_argv
from xenweb.audit.services import record
from xenweb.ws_base import (
    CLOSE_CONSOLE_ERROR,
    CLOSE_GUEST_STOPPED,
    CLOSE_NO_CONSOLE,
    CLOSE_REFUSED_INPUT,
)

logger = logging.getLogger(__name__)

SUBPROTOCOL = "binary"

CONNECT_TIMEOUT = 15.0
SETTLE_SECONDS = 3.0  # how long an ended session waits for the guest's state to follow
CHUNK = 256 * 1024
STDERR_KEEP = 4096
RUNNING_STATES = frozenset({"running", "blocked", "paused", "pmsuspended", "shutdown"})
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 (read, not bound)


# --- view-only: the client→server RFB filter -----------------------------------------------


class RfbFilterError(Exception):
    """The client sent something a view-only session cannot forward safely."""


# Client→server message types (RFC 6143 and the extensions noVNC speaks).
SET_PIXEL_FORMAT, SET_ENCODINGS, FRAMEBUFFER_UPDATE_REQUEST = 0, 2, 3
KEY_EVENT, POINTER_EVENT, CLIENT_CUT_TEXT = 4, 5, 6
ENABLE_CONTINUOUS_UPDATES, CLIENT_FENCE = 150, 248
XVP, SET_DESKTOP_SIZE, QEMU_CLIENT_MESSAGE = 250, 251, 255
EXTENDED_MOUSE_BUTTONS = -316  # pseudo-encoding: PointerEvent with marker bit is 7 bytes
SECURITY_NONE, SECURITY_VNC_AUTH = 1, 2
VERSION_LENGTH = 12
CLIENT_VERSIONS = {b"RFB 003.007\n": 7, b"RFB 003.008\n": 8}


def _server_minor(greeting: bytes) -> int:
    """The minor version of a server's ProtocolVersion (``RFB 003.008\\n``), or -1."""
    if len(greeting) != VERSION_LENGTH or not greeting.startswith(b"RFB 003.") \
            or greeting[-1:] != b"\n" or not greeting[8:11].isdigit():
        return -1
    return int(greeting[8:11])


class ViewerInputFilter:
    """What a view-only client may send to the VNC server, parsed message by message.

    ``client(data)`` takes the bytes of one websocket frame and returns the bytes to forward
    (whole messages only; a message split over frames waits for its end); ``server(data)``
    is shown the server's bytes, of which it reads only the greeting. Raises
    ``RfbFilterError`` for anything it cannot frame: the session must then end.

    Forwarded: the handshake (ProtocolVersion 3.7 or 3.8, security type None or VNC
    password and its 16-byte response, ClientInit — forced to *shared*, so a viewer never
    disconnects other sessions), SetPixelFormat, SetEncodings, FramebufferUpdateRequest,
    EnableContinuousUpdates and ClientFence. Dropped: KeyEvent, PointerEvent,
    ClientCutText (any length, skipped without buffering), SetDesktopSize, XVP (power
    operations) and QEMU's extended key and audio messages. Anything else is refused.

    Only whole, well-formed forwarded messages reach the server, so even a client that lies
    about lengths cannot make the server read input out of the forwarded bytes: at worst
    the filter drops the wrong bytes or refuses.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._greeting = bytearray()
        self._phase = "version"
        self._skip = 0  # payload bytes of a dropped message still to come
        self._extended_pointer = False
        self.dropped = 0  # input messages dropped so far

    def server(self, data: bytes) -> None:
        missing = VERSION_LENGTH - len(self._greeting)
        if missing > 0:
            self._greeting += data[:missing]

    def client(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while True:
            if self._skip:
                skipped = min(self._skip, len(self._buffer))
                del self._buffer[:skipped]
                self._skip -= skipped
                if self._skip:
                    break
            if not self._buffer:
                break
            step = self._step()
            if step is None:  # an incomplete message: wait for more
                break
            length, forward = step
            if forward is not None:
                out += forward
            else:
                self.dropped += 1
            consumed = min(length, len(self._buffer))
            del self._buffer[:consumed]
            self._skip = length - consumed
        return bytes(out)

    # Each step returns (message length, bytes to forward or None to drop), or None when
    # the message is not complete yet.

    def _step(self) -> tuple[int, bytes | None] | None:
        return getattr(self, f"_{self._phase}")()

    def _whole(self, length: int) -> tuple[int, bytes | None] | None:
        if len(self._buffer) < length:
            return None
        return length, bytes(self._buffer[:length])

    def _version(self) -> tuple[int, bytes | None] | None:
        step = self._whole(VERSION_LENGTH)
        if step is None:
            return None
        server_minor = _server_minor(bytes(self._greeting))
        if server_minor < 7:
            raise RfbFilterError("A view-only session needs a VNC server speaking RFB 3.7 or "
                                 "later.")
        client_minor = CLIENT_VERSIONS.get(step[1] or b"")
        if client_minor is None or client_minor > server_minor:
            raise RfbFilterError("A view-only session needs the client to speak RFB 3.7 or "
                                 "3.8.")
        self._phase = "security"
        return step

    def _security(self) -> tuple[int, bytes | None] | None:
        kind = self._buffer[0]
        if kind not in (SECURITY_NONE, SECURITY_VNC_AUTH):
            raise RfbFilterError(f"A view-only session supports no VNC security type {kind} "
                                 "(only none and VNC password).")
        self._phase = "auth" if kind == SECURITY_VNC_AUTH else "init"
        return 1, bytes([kind])

    def _auth(self) -> tuple[int, bytes | None] | None:
        step = self._whole(16)  # the DES response to the server's challenge
        if step is not None:
            self._phase = "init"
        return step

    def _init(self) -> tuple[int, bytes | None] | None:
        self._phase = "messages"
        return 1, b"\x01"  # ClientInit, shared-flag forced on

    def _messages(self) -> tuple[int, bytes | None] | None:
        buf = self._buffer
        kind = buf[0]
        if kind == SET_PIXEL_FORMAT:
            return self._whole(20)
        if kind in (FRAMEBUFFER_UPDATE_REQUEST, ENABLE_CONTINUOUS_UPDATES):
            return self._whole(10)
        if kind == SET_ENCODINGS:
            if len(buf) < 4:
                return None
            count = struct.unpack_from(">H", buf, 2)[0]
            step = self._whole(4 + 4 * count)
            if step is not None:
                encodings = struct.unpack_from(f">{count}i", buf, 4)
                self._extended_pointer = EXTENDED_MOUSE_BUTTONS in encodings
            return step
        if kind == CLIENT_FENCE:
            if len(buf) < 9:
                return None
            return self._whole(9 + buf[8])
        if kind == KEY_EVENT:
            return self._drop(8)
        if kind == POINTER_EVENT:
            if len(buf) < 2:
                return None
            return self._drop(7 if self._extended_pointer and buf[1] & 0x80 else 6)
        if kind == CLIENT_CUT_TEXT:
            if len(buf) < 8:
                return None
            length = struct.unpack_from(">i", buf, 4)[0]  # negative: extended clipboard
            return 8 + abs(length), None
        if kind == XVP:
            return self._drop(4)
        if kind == SET_DESKTOP_SIZE:
            if len(buf) < 8:
                return None
            return self._drop(8 + 16 * buf[6])
        if kind == QEMU_CLIENT_MESSAGE:
            return self._qemu_message()
        raise RfbFilterError(f"A view-only session cannot forward VNC client message type "
                             f"{kind}.")

    def _drop(self, length: int) -> tuple[int, bytes | None] | None:
        return (length, None) if len(self._buffer) >= length else None

    def _qemu_message(self) -> tuple[int, bytes | None] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        if buf[1] == 0:  # extended key event
            return self._drop(12)
        if buf[1] == 1:  # audio: enable (0), disable (1), set format (2)
            if len(buf) < 4:
                return None
            operation = struct.unpack_from(">H", buf, 2)[0]
            if operation in (0, 1):
                return self._drop(4)
            if operation == 2:
                return self._drop(10)
        raise RfbFilterError("A view-only session cannot forward this QEMU VNC message.")


# --- where the VNC server is and how to reach it ------------------------------------------


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


def _ssh_target(address: str, port: int) -> str:
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
                     "-W", _ssh_target(_connect_address(endpoint.listen, ""), endpoint.port)],
        )
        return Route("ssh", address=parsed.hostname, port=endpoint.port, argv=tuple(argv))
    raise VncUnavailable(Ending(
        "unsupported", transport_problem(target.host_uri)
        or f"The graphical console cannot reach hosts over {transport}.", CLOSE_NO_CONSOLE))


def resolve(target: GuestSessionTarget) -> Route:
    """Blocking (libvirt, maybe ssh-keygen): the route to the guest's live VNC server.
    Raises VncUnavailable when there is nothing to connect to."""
    if target.is_privileged:
        raise VncUnavailable(Ending(
            "no-vnc", f"{target.name} is the host's management domain: it has no graphical "
            "console here.", CLOSE_NO_CONSOLE))
    problem = transport_problem(target.host_uri)
    if problem:
        raise VncUnavailable(Ending("unsupported", problem, CLOSE_NO_CONSOLE))
    try:
        endpoint = vnc_endpoint(target.host_uri, target.uuid,
                                allow_insecure=target.allow_insecure_transport)
    except VirtObjectNotFound:
        raise VncUnavailable(Ending(
            "gone", f"The guest {target.name} no longer exists on {target.host_name}.",
            CLOSE_NO_CONSOLE)) from None
    except VirtError as exc:
        raise VncUnavailable(Ending("error", str(exc), CLOSE_CONSOLE_ERROR)) from None
    if endpoint.is_privileged:
        raise VncUnavailable(Ending(
            "no-vnc", f"{target.name} is the host's management domain: it has no graphical "
            "console here.", CLOSE_NO_CONSOLE))
    if not endpoint.has_vnc:
        raise VncUnavailable(Ending(
            "no-vnc", f"{target.name} has no VNC graphics: add a VNC graphics device to the "
            "guest to use its graphical console.", CLOSE_NO_CONSOLE))
    if not endpoint.active:
        raise VncUnavailable(Ending(
            "not-running", f"The guest {target.name} is not running ({endpoint.state}); its "
            "graphical console opens when it starts.", CLOSE_GUEST_STOPPED))
    return plan_route(target, endpoint)


def diagnose(target: GuestSessionTarget, detail: str) -> Ending:
    """Why a session ended (or its connection failed): asks libvirt for the guest's state,
    a running state again for a moment (the VNC server goes a little before the state
    changes). Blocking."""
    deadline = time.monotonic() + SETTLE_SECONDS
    try:
        while True:
            state = virt.get_domain(target.host_uri, target.uuid,
                                    allow_insecure=target.allow_insecure_transport).state
            if state not in RUNNING_STATES or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    except VirtObjectNotFound:
        return Ending("gone", f"The guest {target.name} no longer exists on "
                      f"{target.host_name}.", CLOSE_NO_CONSOLE)
    except VirtError as exc:
        return Ending("error", str(exc), CLOSE_CONSOLE_ERROR)
    if state not in RUNNING_STATES:
        return Ending("stopped", f"The guest {target.name} stopped ({state}).",
                      CLOSE_GUEST_STOPPED)
    return Ending("error", detail, CLOSE_CONSOLE_ERROR)


# --- the byte pipe to the VNC server ----------------------------------------------------


class Tunnel:
    """A byte stream to the VNC server: a socket, or an ssh subprocess's stdin/stdout."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None,
                 process: asyncio.subprocess.Process | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.process = process
        self.stderr = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None
        if process is not None and process.stderr is not None:
            self._stderr_task = asyncio.create_task(self._collect(process.stderr))

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(1024):
            self.stderr += chunk
            del self.stderr[:-STDERR_KEEP]

    async def write(self, data: bytes) -> None:
        if self.writer is not None:
            self.writer.write(data)
            await self.writer.drain()
        elif self.process is not None and self.process.stdin is not None:
            self.process.stdin.write(data)
            await self.process.stdin.drain()

    async def failure(self) -> str:
        """What ssh said about its end (waits a moment for its last words), or ''."""
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 2.0)
        lines = [line.strip() for line in self.stderr.decode(errors="replace").splitlines()]
        return "; ".join(line for line in lines if line)[-500:]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        process = self.process
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 5.0)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task


async def open_tunnel(target: GuestSessionTarget, route: Route) -> Tunnel:
    """Connect to the VNC server along ``route`` (raises OSError when it cannot)."""
    if route.kind == "ssh":
        process = await asyncio.create_subprocess_exec(
            *route.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        assert process.stdout is not None  # noqa: S101 (PIPE)
        return Tunnel(process.stdout, None, process)
    if route.kind == "unix":
        opening = asyncio.open_unix_connection(route.address, limit=CHUNK)
    else:
        opening = asyncio.open_connection(route.address, route.port, limit=CHUNK)
    reader, writer = await asyncio.wait_for(opening, CONNECT_TIMEOUT)
    return Tunnel(reader, writer)


def _where(route: Route) -> str:
    if route.kind == "unix":
        return route.address
    return _ssh_target(route.address, route.port)


# --- the consumer -------------------------------------------------------------------------


@database_sync_to_async
def _audit_opened(user: Any, target: GuestSessionTarget, route: Route, client: str | None) -> None:
    record(
        "guest.vnc",
        user=user,
        target_type="guests.guest",
        target_id=target.guest_pk,
        target_label=target.name,
        message=f"Opened the graphical console of {target.name} on {target.host_name}"
        + (" (view-only)" if not target.may_act else ""),
        host=target.host_name,
        view_only=not target.may_act,
        via=route.label,
        client=client,
    )


class GuestVncConsumer(GuestSessionConsumer):
    """Relays one websocket (noVNC) to one connection to a guest's VNC server."""

    closed_type = "vnc.closed"
    tunnel: Tunnel | None = None
    input_filter: ViewerInputFilter | None = None

    async def connect(self) -> None:
        admitted = await self.admit_target()
        if admitted is None:
            return
        user, target = admitted
        requested = self.scope.get("subprotocols") or []
        await self.accept(SUBPROTOCOL if SUBPROTOCOL in requested else None)
        try:
            route = await asyncio.to_thread(resolve, target)
        except VncUnavailable as exc:
            await self._end(exc.ending)
            return
        try:
            self.tunnel = await open_tunnel(target, route)
        except OSError as exc:  # TimeoutError included
            detail = (f"Cannot reach the VNC server of {target.name} at {_where(route)}: "
                      f"{getattr(exc, 'strerror', None) or str(exc) or 'timed out'}.")
            await self._end(await asyncio.to_thread(diagnose, target, detail))
            return
        if not target.may_act:
            self.input_filter = ViewerInputFilter()
        client = self.scope.get("client")
        await _audit_opened(user, target, route, client[0] if client else None)
        await self._send_json({
            "type": "vnc.status", "state": "connected", "view_only": not target.may_act,
            "guest": target.name, "host": target.host_name, "via": route.label,
        })
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
