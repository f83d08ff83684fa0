"""Domain events from libvirt, as plain dataclasses.

``subscribe(target, on_event, on_close=...)`` opens a dedicated connection (not the pooled
one: nobody else closes or replaces it under the subscription), registers every domain
event family the host supports (lifecycle, reboot, balloon change, device added/removed,
job completed) and calls ``on_event(DomainEvent)`` for each event. When the connection
goes away (host down, libvirtd restarted, keepalive timeout) ``on_close(ConnectionClosed)``
is called once; the subscription is then dead and the caller subscribes again.

Both callbacks run on libvirt's event loop thread (``runtime.ensure_event_loop``): they
must return quickly and touch neither libvirt nor the database; hand the value to
another thread, e.g. through a ``queue.Queue``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt

from .connection import (
    DEFAULT_CONNECT_TIMEOUT,
    _close_quietly,
    _is_alive,
    _open_with_timeout,
)
from .errors import host_label, translate
from .target import VirtTarget

__all__ = [
    "CloseCallback",
    "ConnectionClosed",
    "DomainEvent",
    "EventCallback",
    "Subscription",
    "subscribe",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """Something happened to a guest.

    ``kind`` is one of: defined, undefined, started, suspended, resumed, stopped,
    shutdown, pmsuspended, crashed (lifecycle), reboot, balloon, device-added,
    device-removed, job-completed. ``detail`` says more: the lifecycle reason
    (``booted``, ``destroyed``, ``saved``...), the new balloon size in KiB, the device
    alias, or the finished job's operation.
    """

    uri: str
    uuid: str
    name: str
    kind: str
    detail: str = ""
    received_at: float = field(default_factory=time.time)  # wall clock, when delivered


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The subscription's connection is gone; ``message`` says why, for humans."""

    uri: str
    reason: str  # error, eof, keepalive, client
    message: str


EventCallback = Callable[[DomainEvent], None]
CloseCallback = Callable[[ConnectionClosed], None]


def _names(prefix: str) -> dict[int, str]:
    """libvirt's constants ``PREFIX_SOME_NAME = n`` as ``{n: 'some-name'}``."""
    return {
        getattr(libvirt, name): name.removeprefix(prefix).lower().replace("_", "-")
        for name in dir(libvirt)
        if name.startswith(prefix) and not name.endswith("_LAST")
    }


# Lifecycle event -> (kind, the constants' prefix of its details).
_LIFECYCLE: dict[int, tuple[str, str]] = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: ("defined", "VIR_DOMAIN_EVENT_DEFINED_"),
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: ("undefined", "VIR_DOMAIN_EVENT_UNDEFINED_"),
    libvirt.VIR_DOMAIN_EVENT_STARTED: ("started", "VIR_DOMAIN_EVENT_STARTED_"),
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: ("suspended", "VIR_DOMAIN_EVENT_SUSPENDED_"),
    libvirt.VIR_DOMAIN_EVENT_RESUMED: ("resumed", "VIR_DOMAIN_EVENT_RESUMED_"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED: ("stopped", "VIR_DOMAIN_EVENT_STOPPED_"),
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: ("shutdown", "VIR_DOMAIN_EVENT_SHUTDOWN_"),
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: ("pmsuspended", "VIR_DOMAIN_EVENT_PMSUSPENDED_"),
    libvirt.VIR_DOMAIN_EVENT_CRASHED: ("crashed", "VIR_DOMAIN_EVENT_CRASHED_"),
}
_LIFECYCLE_DETAILS = {event: _names(prefix) for event, (_kind, prefix) in _LIFECYCLE.items()}
_JOB_OPERATIONS = _names("VIR_DOMAIN_JOB_OPERATION_")
_CLOSE_REASONS = _names("VIR_CONNECT_CLOSE_REASON_")


def lifecycle_kind(event: int, detail: int) -> tuple[str, str]:
    """libvirt's lifecycle ``(event, detail)`` numbers as words, e.g. ('stopped', 'destroyed')."""
    kind = _LIFECYCLE.get(event, (f"lifecycle-{event}", ""))[0]
    return kind, _LIFECYCLE_DETAILS.get(event, {}).get(detail, str(detail))


def _job_operation(params: dict[str, Any]) -> str:
    operation = params.get(libvirt.VIR_DOMAIN_JOB_OPERATION)
    if operation is None:
        return ""
    return _JOB_OPERATIONS.get(int(operation), str(operation))


def _close_message(uri: str, reason: str) -> str:
    label = host_label(uri)
    if reason == "keepalive":
        return f"Lost the connection to {label}: it stopped answering keepalive messages"
    if reason == "eof":
        return f"The connection to {label} was closed by the other end (libvirtd restarted?)"
    if reason == "client":
        return f"The connection to {label} was closed"
    return f"The connection to {label} failed"


class Subscription:
    """The event registrations on one dedicated connection; ``close()`` ends them."""

    def __init__(
        self, uri: str, conn: libvirt.virConnect, on_event: EventCallback,
        on_close: CloseCallback | None,
    ) -> None:
        self.uri = uri
        self._conn = conn
        self._on_event = on_event
        self._on_close = on_close
        self._lock = threading.Lock()
        self._closed = False
        self._lost = False
        self._callback_ids: list[int] = []
        self._close_registered = False
        #: The event families the host accepted, e.g. ('lifecycle', 'reboot', ...).
        self.families: tuple[str, ...] = ()

    # -- registration (on the subscribing thread) ------------------------------------

    def _register(self) -> None:
        handlers: list[tuple[str, int, Callable[..., None]]] = [
            ("lifecycle", libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle),
            ("reboot", libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot),
            ("balloon", libvirt.VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE, self._balloon),
            ("device-added", libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, self._device_added),
            ("device-removed", libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
             self._device_removed),
            ("job-completed", libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._job_completed),
        ]
        families = []
        for family, event_id, handler in handlers:
            try:
                self._callback_ids.append(
                    self._conn.domainEventRegisterAny(None, event_id, handler, None)
                )
            except libvirt.libvirtError as exc:
                if family == "lifecycle":  # without it the subscription is useless
                    raise
                logger.debug("%s: no %s events: %s", self.uri, family, exc)
                continue
            families.append(family)
        self.families = tuple(families)
        self._register_close_callback()

    def _register_close_callback(self) -> None:
        try:
            self._conn.registerCloseCallback(self._closed_by_libvirt, None)
        except libvirt.libvirtError as exc:  # local drivers; is_alive() still tells
            logger.debug("%s: no close callback: %s", self.uri, exc)
        else:
            self._close_registered = True

    # -- callbacks (on libvirt's event loop thread) -----------------------------------

    def _emit(self, dom: libvirt.virDomain, kind: str, detail: str = "") -> None:
        if self._closed:
            return
        try:
            # Name and UUID travel with the event: no call to the host here.
            event = DomainEvent(self.uri, dom.UUIDString(), dom.name(), kind, detail)
            self._on_event(event)
        except Exception:  # never let an exception unwind into libvirt's loop
            logger.exception("%s: handling a %s event failed", self.uri, kind)

    def _lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        self._emit(dom, *lifecycle_kind(event, detail))

    def _reboot(self, _conn: Any, dom: Any, _opaque: Any) -> None:
        self._emit(dom, "reboot")

    def _balloon(self, _conn: Any, dom: Any, actual_kib: int, _opaque: Any) -> None:
        self._emit(dom, "balloon", str(actual_kib))

    def _device_added(self, _conn: Any, dom: Any, alias: str, _opaque: Any) -> None:
        self._emit(dom, "device-added", alias)

    def _device_removed(self, _conn: Any, dom: Any, alias: str, _opaque: Any) -> None:
        self._emit(dom, "device-removed", alias)

    def _job_completed(self, _conn: Any, dom: Any, params: dict[str, Any], _opaque: Any) -> None:
        self._emit(dom, "job-completed", _job_operation(params))

    def _closed_by_libvirt(self, _conn: Any, reason: int, _opaque: Any) -> None:
        with self._lock:
            if self._lost or self._closed:
                return
            self._lost = True
        if self._on_close is None:
            return
        word = _CLOSE_REASONS.get(reason, str(reason))
        try:
            self._on_close(ConnectionClosed(self.uri, word, _close_message(self.uri, word)))
        except Exception:
            logger.exception("%s: handling the connection close failed", self.uri)

    # -- for the subscriber -----------------------------------------------------------

    def is_alive(self) -> bool:
        """False once the connection is lost or the subscription closed."""
        return not (self._closed or self._lost) and _is_alive(self._conn)

    def close(self) -> None:
        """Deregister everything and close the connection (quietly; safe to repeat).

        Not from inside an event callback: libvirt would deadlock.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            lost = self._lost
        if not lost and _is_alive(self._conn):  # on a dead link each call would time out
            self._deregister()
        _close_quietly(self._conn)

    def _deregister(self) -> None:
        for callback_id in self._callback_ids:
            try:
                self._conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError as exc:
                logger.debug("%s: deregistering event %s failed: %s", self.uri, callback_id,
                             exc)
        self._callback_ids.clear()
        if self._close_registered:
            try:
                self._conn.unregisterCloseCallback()
            except libvirt.libvirtError as exc:
                logger.debug("%s: unregistering the close callback failed: %s", self.uri, exc)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Subscription {self.uri} {','.join(self.families)}>"


def subscribe(
    target: VirtTarget,
    on_event: EventCallback,
    *,
    on_close: CloseCallback | None = None,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> Subscription:
    """Open a dedicated connection to ``target`` and deliver its domain events.

    Blocks while connecting (at most ``timeout`` seconds for the connection itself);
    raises the ``VirtError`` family (``HostUnreachable``, ``HostDriverError``...).
    """
    checked = target.checked_uri()
    conn = _open_with_timeout(checked, timeout, timeout)  # also starts the event loop
    subscription = Subscription(checked, conn, on_event, on_close)
    try:
        subscription._register()
    except libvirt.libvirtError as exc:
        subscription.close()
        raise translate(exc, checked, action="subscribe to guest events") from exc
    except BaseException:
        subscription.close()
        raise
    return subscription
