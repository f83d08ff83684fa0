"""Guest events through the real thing: a lab host (real libvirtd and QEMU), the real
watcher process (``manage.py watchhosts``), the web server and a browser-like websocket client.

A tiny guest is defined, started and destroyed through ``hosts.virt.domains`` directly,
i.e. out of band as with virsh: only the watcher's event subscription can tell the
inventory and the browsers. Latencies are printed, never asserted.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtError, VirtTarget
from hosts.virt import domains as virt
from hosts.virt.domain_xml import HVM, DomainSpec
from lab.daemons import LabHost
from lab.register import register_lab_host
from lab.tinyguest import TinyGuestImage, ensure_tiny_guest, tiny_guest_cmdline
from tests.live.processes import Service, WebServer, child_env, wait_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

TIMEOUT = 120.0  # generous: a busy CI machine, TCG guests


def tiny_spec(name: str, image: TinyGuestImage) -> DomainSpec:
    return DomainSpec(
        name=name, domain_type="qemu", os_type=HVM, memory_mib=160, vcpus=1,
        kernel=str(image.kernel), initrd=str(image.initrd), cmdline=tiny_guest_cmdline(),
    )


@pytest.fixture(scope="module")
def tiny_image() -> TinyGuestImage:
    """Built (once, cached) before the websocket opens, so the socket never waits on it."""
    return ensure_tiny_guest()


@pytest.fixture
def web(admin_client_tx: Client) -> Iterator[WebServer]:
    server = WebServer()
    yield server
    server.stop()
    print(f"--- web server output ---\n{server.output()[-3000:]}")


@pytest.fixture
def lab_host(lab_hosts: list[LabHost], admin_client_tx: Client) -> Host:
    host, _created = register_lab_host(lab_hosts[0])
    return host


@pytest.fixture
def watcher(lab_host: Host) -> Iterator[Service]:
    """The watcher process, once it has subscribed to the lab host's events."""
    service = Service("watchhosts", [sys.executable, "manage.py", "watchhosts"], child_env())
    try:
        wait_for(
            lambda: f"{lab_host.name}: watching guest events" in service.output()
            or not service.alive(),
            TIMEOUT, "the watcher to subscribe",
        )
        assert service.alive(), service.output()
        yield service
    finally:
        service.stop()
        print(f"--- watcher output ---\n{service.output()[-3000:]}")


@pytest.fixture
def events_socket(web: WebServer, admin_client_tx: Client) -> Iterator[ClientConnection]:
    headers = {
        "Origin": web.origin,
        "Cookie": f"sessionid={admin_client_tx.cookies['sessionid'].value}",
    }
    with connect(web.ws_url("/ws/events/"), additional_headers=headers, open_timeout=20,
                 proxy=None) as ws:
        assert json.loads(ws.recv(timeout=20))["type"] == "hello"
        yield ws


@pytest.fixture
def tiny_guest(lab_host: Host, tiny_image: TinyGuestImage) -> Iterator[str]:
    uri = lab_host.uri
    info = virt.define_domain(VirtTarget(uri, allow_insecure=True),
                              tiny_spec(f"events-{uuid.uuid4().hex[:6]}", tiny_image))
    yield info.uuid
    for action in (virt.destroy, virt.undefine):
        try:
            action(VirtTarget(uri, allow_insecure=True), info.uuid)
        except VirtError:
            pass


def next_message(ws: ClientConnection, wanted: Callable[[dict[str, Any]], bool]
                 ) -> tuple[dict[str, Any], float]:
    """The first message ``wanted`` accepts, and the wall-clock time it arrived."""
    deadline = time.monotonic() + TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        try:
            message = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
        except TimeoutError:
            break
        except ConnectionClosed as exc:
            raise AssertionError(f"the server closed /ws/events/ ({exc}); saw {seen}") from exc
        if wanted(message):
            return message, time.time()
        seen.append(message)
    raise AssertionError(f"no such message within {TIMEOUT} s; saw {seen}")


def guest_state(ws: ClientConnection, guest: str, state: str | None,
                action: Callable[[], None], label: str, kinds: tuple[str, ...] = ()
                ) -> dict[str, Any]:
    """Run ``action`` and wait for the hint that the guest is in ``state`` (after an event
    of one of ``kinds``, if given: a hint carries the state read when its event was
    handled, so an earlier event's hint may already show the new state)."""
    called = time.time()
    action()
    returned = time.time()
    message, arrived = next_message(
        ws, lambda m: m.get("object") == "guest" and m.get("uuid") == guest
        and m.get("state") == state and (not kinds or m.get("event") in kinds),
    )
    print(f"{label} ({message['event']} {message['detail']}): call -> websocket "
          f"{(arrived - called) * 1000:.0f} ms (the call took {(returned - called) * 1000:.0f}"
          f" ms), event delivered to the watcher -> websocket "
          f"{(arrived - message['event_time']) * 1000:.0f} ms")
    return message


def test_out_of_band_start_and_stop_reach_the_browser(
    tiny_image: TinyGuestImage, lab_host: Host, watcher: Service,
    events_socket: ClientConnection, tiny_guest: str,
) -> None:
    uri = lab_host.uri

    started = guest_state(events_socket, tiny_guest, "running",
                          lambda: virt.start(VirtTarget(uri, allow_insecure=True),
                                             tiny_guest), "start")
    # QEMU starts the guest paused and resumes it: "resumed" comes before "started".
    assert started["host"] == lab_host.pk and started["event"] in ("resumed", "started")
    assert started["type"] == "inventory.update" and started["name"].startswith("events-")
    assert Guest.objects.get(host=lab_host, uuid=tiny_guest).state == "running"

    stopped = guest_state(events_socket, tiny_guest, "shutoff",
                          lambda: virt.destroy(VirtTarget(uri, allow_insecure=True), tiny_guest),
                          "destroy", kinds=("stopped",))
    assert (stopped["event"], stopped["detail"]) == ("stopped", "destroyed")
    assert Guest.objects.get(host=lab_host, uuid=tiny_guest).state == "shutoff"

    gone = guest_state(events_socket, tiny_guest, None,
                       lambda: virt.undefine(VirtTarget(uri, allow_insecure=True),
                                             tiny_guest), "undefine",
                       kinds=("undefined",))
    assert gone["removed"] and gone["event"] == "undefined"
    assert not Guest.objects.filter(host=lab_host, uuid=tiny_guest).exists()
    assert watcher.alive()


def test_restarted_libvirtd_host_goes_unreachable_then_online_with_events_again(
    tiny_image: TinyGuestImage, lab_host: Host, watcher: Service,
    events_socket: ClientConnection, tiny_guest: str,
) -> None:
    import os
    import signal

    from lab.daemons import lab_up

    running = {h.name: h for h in lab_up(2)}
    os.kill(running[lab_host.name].pid, signal.SIGKILL)
    wait_for(lambda: Host.objects.get(pk=lab_host.pk).state == Host.State.UNREACHABLE,
             TIMEOUT, "the watcher to mark the host unreachable")
    assert Host.objects.get(pk=lab_host.pk).last_error
    restarted = {h.name: h for h in lab_up(2)}[lab_host.name]
    assert restarted.uri == lab_host.uri
    wait_for(lambda: Host.objects.get(pk=lab_host.pk).state == Host.State.ONLINE,
             TIMEOUT, "the host to come back online")
    wait_for(lambda: watcher.output().count(f"{lab_host.name}: watching guest events") >= 2,
             TIMEOUT, "the watcher to subscribe again")
    # Events flow again, and the inventory matches libvirt.
    guest_state(events_socket, tiny_guest, "running",
                lambda: virt.start(VirtTarget(lab_host.uri, allow_insecure=True), tiny_guest),
                "start after the restart")
    assert Guest.objects.get(host=lab_host, uuid=tiny_guest).state == "running"
    assert {g.uuid for g in virt.list_domains(VirtTarget(lab_host.uri, allow_insecure=True))} == {
        str(u) for u in Guest.objects.filter(host=lab_host).values_list("uuid", flat=True)}
    assert watcher.alive()
