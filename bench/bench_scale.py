"""Inventory at scale: 50 demo hosts with 100, 500 and 2,000 guests in all.

Measured at each size: the full inventory reconcile of every host (time and libvirt
calls), ``GET /api/v1/guests/`` and the guest list page (p50/p95, database queries and
libvirt calls per request), against the baseline of the same list built by asking libvirt
live on every request (what WebVirtCloud-style apps do). At the largest size also: a state
change on one host reaching 50 websocket clients (p50/p99). Requests go through Django's
test client in this process (server time, no network); the websockets through a real
server and the real Redis channel layer.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import websockets
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench.scale_rig import count_libvirt_calls, make_hosts
from bench.stats import latency_summary
from guests.api.guests import GuestSerializer
from guests.inventory import refresh_guest
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget
from hosts.virt import domains as virt
from hosts.virt.connection import drop_connection
from inventory.monitor import sync_inventory
from inventory.watcher import guest_message
from tests.live.processes import WebServer
from xenweb.accounts.roles import ADMIN, set_role, sync_roles
from xenweb.realtime import EVENTS_GROUP, broadcast

HOSTS = 50
SIZES = (100, 500, 2000)
REQUESTS = 40
BASELINE_REQUESTS = 5
CLIENTS = 50
CHANGES = 30
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _requests(client: Client, url: str, count: int) -> dict[str, Any]:
    samples, queries, calls = [], [], []
    for _ in range(count):
        with CaptureQueriesContext(connection) as captured, count_libvirt_calls() as counted:
            began = time.perf_counter()
            response = client.get(url)
            samples.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.content[:300]!r}")
        queries.append(len(captured))
        calls.append(sum(counted.values()))
    return {**latency_summary(samples), "queries": max(queries), "libvirt_calls": max(calls)}


def live_list(hosts: list[Host]) -> list[dict[str, Any]]:
    """The baseline: every guest read from libvirt on the request, serialised the same way."""
    rows = []
    for host in hosts:
        for info in virt.list_domains(VirtTarget(host.uri)):
            guest = Guest(host=host, uuid=info.uuid, name=info.name, state=info.state,
                          os_type=info.xml.os_type, vcpus=info.xml.vcpus,
                          memory_mib=info.xml.memory_mib,
                          max_memory_mib=info.xml.max_memory_mib)
            rows.append(GuestSerializer(guest).data)
    return rows


def _size(total: int, client: Client) -> dict[str, Any]:
    Host.objects.filter(name__startswith="scale").delete()
    hosts = make_hosts(HOSTS, total // HOSTS)
    began = time.perf_counter()
    for host in hosts:
        sync_inventory(host)  # first contact: every guest inserted
    first = time.perf_counter() - began
    with count_libvirt_calls() as calls:
        began = time.perf_counter()
        for host in hosts:
            sync_inventory(host)
        again = time.perf_counter() - began
    guests = Guest.objects.filter(host__in=hosts).count()
    api = _requests(client, "/api/v1/guests/", REQUESTS)
    search = _requests(client, "/api/v1/guests/?name=vm0007&state=running", REQUESTS)
    page = _requests(client, "/guests/", REQUESTS)
    samples = []
    for _ in range(BASELINE_REQUESTS):
        began = time.perf_counter()
        live_list(hosts)
        samples.append(time.perf_counter() - began)
    baseline = latency_summary(samples)
    for host in hosts:
        drop_connection(host.uri)
    return {
        "guests": guests, "hosts": len(hosts),
        "reconcile_first_s": round(first, 3), "reconcile_s": round(again, 3),
        "reconcile_libvirt_calls": sum(calls.values()),
        "api_list": api, "api_search": search, "list_page": page,
        "baseline_live_list": baseline,
        "ratio_baseline_to_api_p50": round(baseline["p50_ms"] / api["p50_ms"], 1),
    }


async def _fan_out(server: WebServer, cookie: str, change: Any) -> list[float]:
    headers = {"Origin": server.origin, "Cookie": f"sessionid={cookie}"}
    sockets = [await websockets.connect(server.ws_url("/ws/events/"), additional_headers=headers,
                                        open_timeout=30) for _ in range(CLIENTS)]
    latencies: list[float] = []
    try:
        for ws in sockets:
            await ws.recv()  # hello

        async def wait_for(ws: Any, marker: str, began: float) -> float:
            while True:
                message = json.loads(await ws.recv())
                if message.get("state") == marker:
                    return time.perf_counter() - began

        for number in range(CHANGES):
            marker = ("paused", "running")[number % 2]
            began = time.perf_counter()
            waits = [asyncio.create_task(wait_for(ws, marker, began)) for ws in sockets]
            await asyncio.to_thread(change, marker)
            latencies += await asyncio.wait_for(asyncio.gather(*waits), timeout=30)
    finally:
        for ws in sockets:
            await ws.close()
    return latencies


def _state_changes(cookie: str) -> dict[str, Any]:
    """Pause/resume a guest on one host (in libvirt), then what the watcher does on the
    event: refresh the row and broadcast the hint; timed until all 50 clients have it."""
    from hosts.virt.events import DomainEvent

    host = Host.objects.filter(name__startswith="scale").order_by("name").first()
    guest = host.guests.filter(state="running").order_by("name").first()

    def change(state: str) -> None:
        (virt.pause if state == "paused" else virt.resume)(VirtTarget(host.uri),
                                                           str(guest.uuid))
        row = refresh_guest(host, str(guest.uuid))
        event = DomainEvent(uri=host.uri, uuid=str(guest.uuid), name=guest.name,
                            kind="suspended" if state == "paused" else "resumed",
                            detail="", received_at=time.time())
        broadcast([EVENTS_GROUP], guest_message(host, event, row.state if row else None))

    server = WebServer()
    try:
        latencies = asyncio.run(_fan_out(server, cookie, change))
    finally:
        server.stop()
    return {"clients": CLIENTS, "changes": CHANGES, **latency_summary(latencies)}


def _chart(rows: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["guests"] for row in rows]
    figure, axis = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    axis.plot(sizes, [row["api_list"]["p95_ms"] for row in rows], "o-", label="API list p95")
    axis.plot(sizes, [row["list_page"]["p95_ms"] for row in rows], "s-", label="page p95")
    axis.plot(sizes, [row["baseline_live_list"]["p50_ms"] for row in rows], "^--",
              label="baseline: live libvirt list p50")
    axis.set_xlabel("guests in the inventory")
    axis.set_ylabel("ms per request")
    axis.set_yscale("log")
    axis.set_title("Guest list latency against inventory size")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    DOCS.mkdir(exist_ok=True)
    out = DOCS / "benchmarks-scale.png"
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
    return str(out.relative_to(DOCS.parent))


def _appliance_ready() -> None:
    from django.utils import timezone

    from xenweb.appliance import setup_state
    from xenweb.appliance.models import ApplianceSettings, forget_settings

    row = ApplianceSettings.load()
    if row.setup_completed_at is None:
        row.setup_completed_at = timezone.now()
        row.save()
    setup_state.forget()
    forget_settings()


def run() -> dict[str, Any]:
    _appliance_ready()
    sync_roles()
    user, _ = get_user_model().objects.get_or_create(username="bench-scale")
    set_role(user, ADMIN)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    rows = []
    for total in SIZES:
        row = _size(total, client)
        rows.append(row)
        print(f"  {row['guests']:5d} guests: reconcile {row['reconcile_s']} s "
              f"({row['reconcile_libvirt_calls']} libvirt calls); API p50/p95 "
              f"{row['api_list']['p50_ms']}/{row['api_list']['p95_ms']} ms "
              f"({row['api_list']['queries']} queries, {row['api_list']['libvirt_calls']} "
              f"libvirt calls); page p95 {row['list_page']['p95_ms']} ms; live baseline p50 "
              f"{row['baseline_live_list']['p50_ms']} ms", flush=True)
    fan_out = _state_changes(client.cookies["sessionid"].value)
    print(f"  state change to {CLIENTS} clients: p50 {fan_out['p50_ms']} ms, "
          f"p99 {fan_out['p99_ms']} ms", flush=True)
    chart = _chart(rows)
    Host.objects.filter(name__startswith="scale").delete()
    return {"sizes": rows, "state_change_fan_out": fan_out, "chart": chart}
