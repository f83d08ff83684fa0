"""The watcher: every host's libvirt domain events into the guest cache and to browsers.

One event subscription per host (``hosts.virt.events``), opened in a short-lived thread
so that a silent host never holds up the others. libvirt delivers events on its own
event-loop thread; they are handed over through a queue and handled on the watcher's
thread, which alone touches the database and the channel layer:

- a domain event re-reads that guest (``guests.inventory.refresh_guest``: updated,
  created on define, deleted on undefine) and broadcasts an ``inventory.update`` hint
  (``object: guest``) to the ``events`` group;
- a failed connect marks the host unreachable with the error and is retried with
  exponential backoff; a lost connection is reconnected at once; a (re)connect
  re-registers the events and refreshes the host (online, inventory re-read, as events
  may have been missed meanwhile);
- every ``reconcile_interval`` seconds the hosts that are connected are refreshed in
  full (``inventory.monitor.refresh_host``), which fixes any drift; hosts that are not
  connected are the reconnect loop's business, so a silent host never stalls a round;
- the Host table is re-read every ``hosts_interval`` seconds: enrolled hosts are
  subscribed, removed ones dropped, without a restart.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections

from guests.inventory import alert_crash, refresh_guest
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtError, VirtTarget, describe_error
from hosts.virt.demo import is_private_mock
from hosts.virt.events import ConnectionClosed, DomainEvent, Subscription, subscribe
from inventory.monitor import mark_unreachable, refresh_all_hosts, refresh_host
from xenweb.realtime import EVENTS_GROUP, broadcast

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 30.0
HOSTS_INTERVAL = 2.0
CONNECT_TIMEOUT = 15.0
BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0


@dataclass(frozen=True)
class Connected:
    subscription: Subscription


@dataclass(frozen=True)
class ConnectFailed:
    error: str


Payload = DomainEvent | ConnectionClosed | Connected | ConnectFailed


@dataclass
class HostWatch:
    """What the watcher knows about one host's event connection."""

    host_id: int
    target: VirtTarget
    subscription: Subscription | None = None
    connecting: bool = False
    attempt: int = 0  # number of the latest connect attempt; older results are stale
    failures: int = 0  # connect failures in a row
    next_attempt: float = 0.0  # time.monotonic() of the next connect attempt


@dataclass(frozen=True)
class Item:
    """One thing for the watcher's thread: what happened, to which host, on which attempt."""

    watch: HostWatch
    attempt: int
    payload: Payload


def backoff(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """Seconds before the next connect attempt: base, 2*base, 4*base... at most cap."""
    return min(cap, base * 2 ** max(failures - 1, 0))


def guest_message(host: Host, event: DomainEvent, state: str | None) -> dict[str, Any]:
    """The hint broadcast for a guest event; ``state`` None means the guest is gone."""
    return {
        "type": "inventory.update",
        "object": "guest",
        "host": host.pk,
        "uuid": event.uuid,
        "name": event.name,
        "state": state,
        "removed": state is None,
        "event": event.kind,
        "detail": event.detail,
        "event_time": event.received_at,
    }


def close_in_background(subscription: Subscription) -> None:
    """Close without waiting: a half-dead connection may take a keepalive period to close."""
    threading.Thread(target=subscription.close, name="watch-close", daemon=True).start()


class Watcher:
    """Keeps one event subscription per enrolled host; ``run()`` until stopped."""

    def __init__(
        self,
        *,
        reconcile_interval: float = RECONCILE_INTERVAL,
        hosts_interval: float = HOSTS_INTERVAL,
        connect_timeout: float = CONNECT_TIMEOUT,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.reconcile_interval = reconcile_interval
        self.hosts_interval = hosts_interval
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.queue: queue.Queue[Item] = queue.Queue()
        self.watches: dict[int, HostWatch] = {}
        self._next_host_sync = 0.0
        self._next_reconcile = time.monotonic() + reconcile_interval

    # -- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event, tick: float = 0.5) -> None:
        """Watch until ``stop`` is set; errors (database, Redis) are logged and outlived."""
        next_cleanup = time.monotonic() + self.reconcile_interval
        try:
            while not stop.is_set():
                try:
                    self.step(tick)
                except Exception:
                    log.exception("watch round failed; carrying on")
                    stop.wait(1.0)
                    next_cleanup = 0.0
                if time.monotonic() >= next_cleanup:  # a long-lived process: drop bad ones
                    close_old_connections()
                    next_cleanup = time.monotonic() + self.reconcile_interval
        finally:
            self.close()

    def step(self, wait: float) -> int:
        """One turn: host list, connects, reconcile when due, then queued items."""
        now = time.monotonic()
        if now >= self._next_host_sync:
            self._next_host_sync = now + self.hosts_interval
            self.sync_hosts()
            self.check_alive()
        self.connect_due(now)
        if now >= self._next_reconcile:
            self._next_reconcile = now + self.reconcile_interval
            self.reconcile()
        return self.process(wait)

    def process(self, wait: float) -> int:
        """Handle every queued item, waiting up to ``wait`` seconds for the first one."""
        handled = 0
        try:
            item = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
            while True:
                self.handle(item)
                handled += 1
                item = self.queue.get_nowait()
        except queue.Empty:
            return handled

    def close(self) -> None:
        """Close every subscription (connect attempts still running are left to die)."""
        for watch in self.watches.values():
            if watch.subscription is not None:
                watch.subscription.close()
                watch.subscription = None
        self.watches.clear()

    # -- hosts and connections -----------------------------------------------------------

    def sync_hosts(self) -> None:
        """Follow the Host table: watch new hosts, forget removed ones and changed URIs."""
        # A node-file demo host is private to the web process: nothing to watch here.
        rows = {pk: VirtTarget(uri, insecure) for pk, uri, insecure in
                Host.objects.values_list("pk", "uri", "allow_insecure_transport")
                if not is_private_mock(uri)}
        for host_id in list(self.watches):
            watch = self.watches[host_id]
            if rows.get(host_id) != watch.target:
                self._forget(watch)
        for host_id, target in rows.items():
            if host_id not in self.watches:
                self.watches[host_id] = HostWatch(host_id, target)

    def _forget(self, watch: HostWatch) -> None:
        del self.watches[watch.host_id]
        if watch.subscription is not None:
            close_in_background(watch.subscription)
            watch.subscription = None
        log.info("stopped watching host %s (%s)", watch.host_id, watch.target.uri)

    def check_alive(self) -> None:
        """Drivers without close callbacks: notice dead connections by asking."""
        for watch in self.watches.values():
            if watch.subscription is not None and not watch.subscription.is_alive():
                self._lost(watch, "the event connection is no longer alive")

    def connect_due(self, now: float) -> None:
        for watch in self.watches.values():
            if watch.subscription is None and not watch.connecting and now >= watch.next_attempt:
                self._start_connect(watch)

    def _start_connect(self, watch: HostWatch) -> None:
        watch.connecting = True
        watch.attempt += 1
        thread = threading.Thread(
            target=self._connect, args=(watch, watch.attempt),
            name=f"watch-connect-{watch.host_id}", daemon=True,
        )
        thread.start()

    def _connect(self, watch: HostWatch, attempt: int) -> None:
        """In a helper thread: only libvirt, never the database."""

        def put(payload: Payload) -> None:
            self.queue.put(Item(watch, attempt, payload))

        try:
            subscription = subscribe(
                watch.target, put, on_close=put, timeout=self.connect_timeout,
            )
        except Exception as exc:  # VirtError, or anything else: a message all the same
            put(ConnectFailed(describe_error(exc, watch.target.uri)))
        else:
            put(Connected(subscription))

    def reconcile(self) -> None:
        """Full refresh of the connected hosts, handling events in between."""
        for watch in list(self.watches.values()):
            if watch.subscription is None:
                continue
            host = Host.objects.filter(pk=watch.host_id).first()
            if host is not None:
                refresh_host(host)
            self.process(0)

    # -- handling ------------------------------------------------------------------------

    def handle(self, item: Item) -> None:
        watch, payload = item.watch, item.payload
        if self.watches.get(watch.host_id) is not watch or item.attempt != watch.attempt:
            if isinstance(payload, Connected):  # the host was removed or changed meanwhile
                close_in_background(payload.subscription)
            return
        if isinstance(payload, DomainEvent):
            self._on_event(watch, payload)
        elif isinstance(payload, Connected):
            self._on_connected(watch, payload.subscription)
        elif isinstance(payload, ConnectFailed):
            self._on_connect_failed(watch, payload.error)
        elif isinstance(payload, ConnectionClosed):
            self._lost(watch, payload.message)

    def _on_event(self, watch: HostWatch, event: DomainEvent) -> None:
        host = Host.objects.filter(pk=watch.host_id).first()
        if host is None:
            return
        try:
            guest = refresh_guest(host, event.uuid)
        except VirtError as exc:  # the next reconcile round catches up
            log.warning("%s: guest %s after %s event not refreshed: %s",
                        host, event.name, event.kind, exc)
            return
        state = guest.state if guest is not None else None
        if event.kind == "crashed" and state != Guest.State.CRASHED:
            alert_crash(host, guest, event.name, event.uuid)  # already gone or shut off
        log.info("%s: guest %s %s %s -> %s", host, event.name, event.kind, event.detail,
                 state or "gone")
        broadcast([EVENTS_GROUP], guest_message(host, event, state))

    def _on_connected(self, watch: HostWatch, subscription: Subscription) -> None:
        watch.connecting = False
        watch.subscription = subscription
        watch.failures = 0
        host = Host.objects.filter(pk=watch.host_id).first()
        if host is None:
            return  # the next host sync forgets the watch and closes the subscription
        log.info("%s: watching guest events (%s)", host, ", ".join(subscription.families))
        refresh_host(host)  # online again, and whatever happened meanwhile is re-read

    def _on_connect_failed(self, watch: HostWatch, error: str) -> None:
        watch.connecting = False
        watch.failures += 1
        delay = backoff(watch.failures, self.backoff_base, self.backoff_max)
        watch.next_attempt = time.monotonic() + delay
        host = Host.objects.filter(pk=watch.host_id).first()
        if host is None:
            return
        log.warning("%s: no event connection (retry in %g s): %s", host, delay, error)
        mark_unreachable(host, error)

    def _lost(self, watch: HostWatch, why: str) -> None:
        """The subscription died: drop it and reconnect now (a failure then says why)."""
        log.warning("host %s (%s): %s; reconnecting", watch.host_id, watch.target.uri, why)
        if watch.subscription is not None:
            close_in_background(watch.subscription)
            watch.subscription = None
        watch.next_attempt = 0.0


def run_once() -> list[Host]:
    """One full probe and reconcile of every host, without events (``watchhosts --once``)."""
    return refresh_all_hosts()
