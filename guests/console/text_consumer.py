"""`/ws/guests/<pk>/console/`: a guest's text console (serial or Xen PV console) in the browser.

The bridge: one libvirt console stream (``hosts.virt.console.ConsoleStream``) per websocket.
Every call on the stream (open, read, write, close) runs on one worker thread owned by the
websocket, so the stream is never used from two threads at once and the event loop never
blocks on libvirt. A background task polls the non-blocking stream every ``POLL_SECONDS``
and sends what arrived as binary frames; binary (or text) frames from the browser are
written to the stream. Text frames from the server are JSON status messages:

- ``{"type": "console.status", "state": "connected", "readonly": bool, ...}`` once open;
- ``{"type": "console.readonly", "message": ...}`` the first time a read-only user types;
- ``{"type": "console.closed", "reason": ..., "message": ...}`` just before the server
  closes the socket, with one of the ``CLOSE_*`` codes of ``xenweb.ws_base``.

Watching needs ``guests.view_guest``, typing ``guests.change_guest``; a user without the
latter gets a read-only console whose input is dropped here, on the server. libvirt allows
one console session per guest. A user who may type opens it with VIR_DOMAIN_CONSOLE_FORCE
and so takes it over from another session (another tab, ``virsh console``), which is then
closed with ``CLOSE_TAKEN_OVER`` and does not reconnect by itself. A read-only viewer never
takes a console over: while another session has it, the viewer is told so and closed with
``CLOSE_IN_USE`` (the page retries slowly). There is no mirror of another session's output:
each websocket has its own libvirt stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from guests.console.diagnosis import guest_ending
from guests.console.sessions import Ending, GuestSessionConsumer, GuestSessionTarget
from hosts.virt import VirtError
from hosts.virt.console import ConsoleInUse, ConsoleStream
from xenweb.ws_base import (
    CLOSE_CONSOLE_ERROR,
    CLOSE_GUEST_STOPPED,
    CLOSE_IN_USE,
    CLOSE_NO_CONSOLE,
    CLOSE_TAKEN_OVER,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

POLL_SECONDS = 0.05


def diagnose(target: GuestSessionTarget, error: VirtError | None, *, opened: bool) -> Ending:
    """Why the console could not open (``opened=False``) or ended: asks libvirt for the
    guest's state, so blocking; runs on the console's thread."""
    ending = guest_ending(target, opened=opened)
    if ending is not None:
        return ending
    if not opened:
        message = str(error) if error else "The console could not be opened."
        return Ending("error", message, CLOSE_CONSOLE_ERROR)
    if error is None:
        # End of stream while the guest runs: it was restarted (a Xen reboot recreates the
        # domain). Reconnecting at once finds the new console.
        return Ending("restarted", f"The console of {target.name} ended; the guest restarted.",
                      CLOSE_GUEST_STOPPED)
    return Ending(
        "taken-over",
        f"The console of {target.name} was closed while the guest kept running: another "
        "session (another browser tab or virsh console) probably took it over. libvirt "
        "allows one console session per guest.",
        CLOSE_TAKEN_OVER,
    )


def in_use(target: GuestSessionTarget) -> Ending:
    return Ending(
        "in-use",
        f"The console of {target.name} is in use by another session (an operator's tab or "
        "virsh console). A read-only viewer does not take it over: it opens here once the "
        "other session has closed.",
        CLOSE_IN_USE,
    )


class GuestConsoleConsumer(GuestSessionConsumer):
    """Bridges one websocket to one libvirt console stream of a guest."""

    kind = "console"
    title = "console"
    restricted = "read-only"
    stream: ConsoleStream | None = None
    executor: ThreadPoolExecutor | None = None
    warned_readonly = False

    # --- the console's own thread ------------------------------------------------------

    async def _call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: func(*args, **kwargs))

    # --- websocket life cycle ----------------------------------------------------------

    async def start(self, user: Any, target: GuestSessionTarget) -> None:
        if target.is_privileged:
            await self._end(Ending(
                "no-console",
                f"{target.name} is the host's management domain: its console is the host's "
                "own console, not reachable through libvirt.",
                CLOSE_NO_CONSOLE,
            ))
            return
        try:
            # Only a session that may type takes the console from another one.
            self.stream = await self._call(
                ConsoleStream, target.virt_target, target.uuid, force=target.may_act,
            )
        except ConsoleInUse:
            await self._end(in_use(target))
            return
        except VirtError as exc:
            await self._end(await self._call(diagnose, target, exc, opened=False))
            return
        await self.opened(user, target, readonly=not target.may_act)
        self.pump = asyncio.create_task(self._pump())

    async def disconnect(self, code: int) -> None:
        await self.stop_pump()
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                await self._call(stream.close)
            except Exception:  # never let cleanup fail the disconnect
                logger.exception("closing the console stream failed")
        if self.executor is not None:
            self.executor.shutdown(wait=False)
            self.executor = None

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        """Keystrokes: binary frames (or text, sent as UTF-8) go to the guest's console."""
        data = bytes_data if bytes_data is not None else (text_data or "").encode()
        if not data or self.stream is None or self.target is None or self.ending:
            return
        if not self.target.may_act:
            if not self.warned_readonly:
                self.warned_readonly = True
                await self._send_json({
                    "type": "console.readonly",
                    "message": "Read-only console: your keystrokes are not sent to the guest "
                               "(typing needs the operator role).",
                })
            return
        try:
            await self._call(self.stream.write, data)
        except VirtError as exc:
            logger.info("console write to %s failed: %s", self.target.name, exc)

    # --- the pump ------------------------------------------------------------------------

    async def _pump(self) -> None:
        """Console output to the browser until the stream ends, then the last word."""
        stream, target = self.stream, self.target
        assert stream is not None and target is not None  # noqa: S101 (set in connect)
        try:
            ending = await self._relay(stream, target)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: end the session visibly rather than hang silently
            logger.exception("console of %s: the pump failed", target.name)
            ending = Ending("error", "The console ended unexpectedly.", CLOSE_CONSOLE_ERROR)
        if self.stream is not stream:  # disconnected meanwhile
            return
        self.pump = None  # finished: disconnect() must not wait for itself
        await self._end(ending)

    async def _relay(self, stream: ConsoleStream, target: GuestSessionTarget) -> Ending:
        error: VirtError | None = None
        try:
            while True:
                data = await self._call(stream.read)
                if data:
                    await self.send(bytes_data=data)
                if stream.closed:
                    break
                await asyncio.sleep(POLL_SECONDS)
        except VirtError as exc:
            error = exc
        return await self._call(diagnose, target, error, opened=True)
