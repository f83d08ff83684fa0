"""The watcher in-process, on libvirt's test driver: events, the guest cache, reconnects.

``test:///default`` is one shared host per process, so a change made through
``hosts.virt.domains`` (another connection, as virsh would be) raises events on the
watcher's own connection.
"""

from __future__ import annotations

import queue
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from guests.models import Guest
from hosts.models import Host
from hosts.virt import DEMO_NODE_FILE, VirtError, VirtObjectNotFound, VirtTarget
from hosts.virt import domains as virt
from hosts.virt.domain_xml import PV, DomainSpec
from hosts.virt.events import DomainEvent, lifecycle_kind, subscribe
from inventory.watcher import Watcher, backoff

URI = "test:///default"
TARGET = VirtTarget(URI)
TIMEOUT = 15.0


def spec(prefix: str) -> DomainSpec:
    return DomainSpec(name=f"{prefix}-{uuid.uuid4().hex[:6]}", domain_type="test", os_type=PV,
                      memory_mib=128, vcpus=1, kernel="/boot/vmlinuz")


def remove_domain(target: VirtTarget, guest: str) -> None:
    for action in (virt.destroy, virt.undefine):
        try:
            action(target, guest)
        except VirtError:
            pass


def pump(watcher: Watcher, done: Callable[[], Any], what: str) -> Any:
    """Run the watcher's loop on this thread until ``done()`` is true."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        watcher.step(0.05)
        result = done()
        if result:
            return result
    raise AssertionError(f"timed out after {TIMEOUT} s waiting for {what}")


def events_until(got: queue.Queue[DomainEvent], done: Callable[[DomainEvent], bool],
                 ) -> list[DomainEvent]:
    seen = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            event = got.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(event)
        if done(event):
            return seen
    raise AssertionError(f"the expected event did not come; saw {seen}")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The hints the watcher broadcasts about guests."""
    messages: list[dict[str, Any]] = []
    monkeypatch.setattr("inventory.watcher.broadcast", lambda _groups, msg: messages.append(msg))
    return messages


@pytest.fixture
def watcher() -> Iterator[Watcher]:
    w = Watcher(hosts_interval=0.1, backoff_base=0.2, connect_timeout=5)
    yield w
    w.close()


def subscribed(watcher: Watcher, host: Host) -> Any:
    watch = watcher.watches.get(host.pk)
    return watch is not None and watch.subscription is not None and watch.subscription


def test_lifecycle_words() -> None:
    assert lifecycle_kind(5, 1) == ("stopped", "destroyed")
    assert lifecycle_kind(2, 0) == ("started", "booted")
    assert lifecycle_kind(0, 0) == ("defined", "added")
    assert backoff(1) == 1.0 and backoff(3) == 4.0 and backoff(30) == 60.0


def test_subscription_delivers_lifecycle_events() -> None:
    got: queue.Queue[DomainEvent] = queue.Queue()
    with subscribe(TARGET, got.put) as subscription:
        assert "lifecycle" in subscription.families and subscription.is_alive()
        info = virt.define_domain(TARGET, spec("ev"))
        try:
            virt.start(TARGET, info.uuid)
            virt.pause(TARGET, info.uuid)
            virt.resume(TARGET, info.uuid)
            virt.destroy(TARGET, info.uuid)
        finally:
            virt.undefine(TARGET, info.uuid)
        seen = events_until(got, lambda e: e.uuid == info.uuid and e.kind == "undefined")
    assert not subscription.is_alive()
    mine = [(e.kind, e.detail) for e in seen if e.uuid == info.uuid]
    assert mine == [("defined", "added"), ("started", "booted"), ("suspended", "paused"),
                    ("resumed", "unpaused"), ("stopped", "destroyed"),
                    ("undefined", "removed")]
    assert all(e.name == info.name and e.uri == URI for e in seen if e.uuid == info.uuid)


@pytest.mark.django_db
def test_out_of_band_changes_reach_the_cache_and_the_browsers(
    watcher: Watcher, sent: list[dict[str, Any]]
) -> None:
    host = Host.objects.create(name="t", uri=URI)
    pump(watcher, lambda: subscribed(watcher, host), "the event subscription")
    host.refresh_from_db()
    assert host.state == Host.State.ONLINE  # a (re)connect refreshes the host

    info = virt.define_domain(TARGET, spec("oob"))  # out of band, as with virsh
    try:
        row = pump(watcher, lambda: Guest.objects.filter(uuid=info.uuid).first(),
                   "the defined guest's row")
        assert row.state == "shutoff" and row.host == host

        started = time.monotonic()
        virt.start(TARGET, info.uuid)
        pump(watcher, lambda: Guest.objects.get(uuid=info.uuid).state == "running",
             "the guest running in the cache")
        print(f"start -> cache: {(time.monotonic() - started) * 1000:.0f} ms")
        hint = next(m for m in sent if m["uuid"] == info.uuid and m["event"] == "started")
        assert hint == {
            "type": "inventory.update", "object": "guest", "host": host.pk,
            "uuid": info.uuid, "name": info.name, "state": "running", "removed": False,
            "event": "started", "detail": "booted", "event_time": hint["event_time"],
        }

        virt.destroy(TARGET, info.uuid)
        pump(watcher, lambda: Guest.objects.get(uuid=info.uuid).state == "shutoff",
             "the guest shut off in the cache")
    finally:
        remove_domain(TARGET, info.uuid)
    pump(watcher, lambda: not Guest.objects.filter(uuid=info.uuid).exists(),
         "the undefined guest's row gone")
    gone = next(m for m in sent if m["uuid"] == info.uuid and m["event"] == "undefined")
    assert gone["removed"] and gone["state"] is None


@pytest.mark.django_db
def test_unreachable_host_is_marked_retried_and_comes_back(
    watcher: Watcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node file that appears later stands in for a host that comes back; the watcher
    # normally leaves node-file hosts to the web process (they are private per connection).
    monkeypatch.setattr("inventory.watcher.is_private_mock", lambda uri: False)
    node = tmp_path / "node.xml"
    host = Host.objects.create(name="later", uri=f"test://{node}", state=Host.State.ONLINE)

    def state() -> Host:
        host.refresh_from_db()
        return host

    pump(watcher, lambda: state().state == Host.State.UNREACHABLE, "the host unreachable")
    assert "does not exist" in host.last_error and host.state_since is not None
    pump(watcher, lambda: watcher.watches[host.pk].failures >= 2, "a second attempt")
    assert watcher.watches[host.pk].subscription is None

    shutil.copy(DEMO_NODE_FILE, node)  # the host answers again
    pump(watcher, lambda: subscribed(watcher, host), "the reconnect")
    assert state().state == Host.State.ONLINE and host.last_error == ""
    assert watcher.watches[host.pk].failures == 0
    assert host.guests.filter(name="web01").exists()  # re-read on reconnect


@pytest.mark.django_db
def test_lost_connection_is_reopened_and_events_flow_again(
    watcher: Watcher, sent: list[dict[str, Any]]
) -> None:
    host = Host.objects.create(name="t", uri=URI)
    first = pump(watcher, lambda: subscribed(watcher, host), "the event subscription")
    first.close()  # as if the link died (local drivers have no close callback)
    pump(watcher, lambda: subscribed(watcher, host) not in (False, first), "a new subscription")
    assert subscribed(watcher, host).is_alive()

    info = virt.define_domain(TARGET, spec("again"))
    try:
        virt.start(TARGET, info.uuid)
        pump(watcher, lambda: Guest.objects.filter(uuid=info.uuid, state="running").exists(),
             "the event through the new subscription")
    finally:
        remove_domain(TARGET, info.uuid)
    with pytest.raises(VirtObjectNotFound):
        virt.get_domain(TARGET, info.uuid)


@pytest.mark.django_db
def test_hosts_are_followed_without_a_restart(watcher: Watcher) -> None:
    watcher.step(0)
    assert watcher.watches == {}
    host = Host.objects.create(name="t", uri=URI)
    first = pump(watcher, lambda: subscribed(watcher, host), "the new host watched")
    host_id = host.pk
    host.delete()
    pump(watcher, lambda: host_id not in watcher.watches, "the removed host forgotten")
    pump(watcher, lambda: not first.is_alive(), "its subscription closed")


@pytest.mark.django_db
def test_periodic_reconcile_fixes_drift() -> None:
    watcher = Watcher(hosts_interval=0.1, reconcile_interval=0.3)
    try:
        host = Host.objects.create(name="t", uri=URI)
        pump(watcher, lambda: subscribed(watcher, host), "the event subscription")
        guest = host.guests.get(name="test")
        truth = virt.get_domain(TARGET, str(guest.uuid)).state
        Guest.objects.filter(pk=guest.pk).update(state="crashed", vcpus=99)  # drift
        pump(watcher, lambda: Guest.objects.get(pk=guest.pk).state == truth,
             "the reconcile round")
        assert Guest.objects.get(pk=guest.pk).vcpus != 99
    finally:
        watcher.close()


@pytest.mark.django_db
def test_the_demo_host_is_left_to_the_web_process(watcher: Watcher) -> None:
    from hosts.virt import demo_uri

    Host.objects.create(name="demo", uri=demo_uri())
    watcher.sync_hosts()
    assert not watcher.watches


@pytest.mark.django_db
def test_a_watch_takes_the_hosts_transport_capability(watcher: Watcher) -> None:
    insecure = Host.objects.create(name="a", uri="qemu+tcp://127.0.0.1:1/system",
                                   allow_insecure_transport=True)
    files = Host.objects.create(name="b", uri="qemu+tcp://127.0.0.1:2/system", is_lab=True,
                                files_local=True)
    watcher.sync_hosts()
    assert watcher.watches[insecure.pk].target.allow_insecure
    assert not watcher.watches[files.pk].target.allow_insecure
    Host.objects.filter(pk=files.pk).update(allow_insecure_transport=True)
    watcher.sync_hosts()  # a changed capability is a new watch
    assert watcher.watches[files.pk].target.allow_insecure
