"""Performance graphs on a real lab host: one bulk read per host gives every guest's
counters, two samples give rates, the API and the pages serve them, old samples go."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from guests.models import Guest, GuestSample
from hosts.models import HostSample
from hosts.virt import VirtTarget
from hosts.virt import domains as virt
from hosts.virt.stats import host_counters
from inventory.metrics import prune, sample_all, sample_host
from lab.bootfiles import lab_boot_files
from lab.register import register_lab_host
from lab.tinyguest import tiny_guest_cmdline

pytestmark = pytest.mark.django_db


def test_samples_rates_api_pages_and_retention(lab_hosts: list[Any], admin_client: Client,
                                               settings: Any) -> None:
    host, _ = register_lab_host(lab_hosts[0])
    kernel, initrd = lab_boot_files(host)
    created = admin_client.post("/api/v1/guests/", {
        "name": f"perf-{uuid.uuid4().hex[:6]}", "host": host.pk, "type": "hvm",
        "memory_mib": 128, "kernel_file": kernel, "initrd_file": initrd,
        "cmdline": tiny_guest_cmdline()}, content_type="application/json")
    assert created.status_code == 201, created.json()
    guest = Guest.objects.get(pk=created.json()["id"])
    try:
        assert admin_client.post(f"/api/v1/guests/{guest.pk}/start/").status_code == 200
        counters = host_counters(VirtTarget(host.uri, allow_insecure=True))
        mine = [c for c in counters.guests if c.uuid == str(guest.uuid)]
        assert mine and mine[0].cpu_time_ns > 0 and mine[0].vcpus == 1
        assert counters.cpu_total_ns > counters.cpu_busy_ns > 0
        assert sample_host(host) >= 1
        time.sleep(2)
        assert host.name in sample_all()  # beat's task: every reachable host
        series = admin_client.get(f"/api/v1/guests/{guest.pk}/metrics/?minutes=5").json()
        assert len(series["t"]) == 1
        cpu = series["series"]["cpu_percent"][0]
        assert cpu is not None and 0 <= cpu <= 100 * 1.5  # TCG guests can overshoot a bit
        assert series["series"]["memory_mib"][0] > 0
        host_series = admin_client.get(f"/api/v1/hosts/{host.pk}/metrics/").json()
        assert len(host_series["t"]) == 1 and host_series["series"]["cpu_percent"][0] >= 0

        page = admin_client.get(guest.get_absolute_url()).content.decode()
        assert f'data-metrics-url="/api/v1/guests/{guest.pk}/metrics/"' in page
        assert 'data-metrics-url="/api/v1/hosts/' in admin_client.get(
            host.get_absolute_url()).content.decode()
        assert 'id="host-load"' in admin_client.get("/").content.decode()

        GuestSample.objects.filter(guest=guest).update(at=timezone.now() - timedelta(hours=30))
        settings.METRICS_RETENTION_HOURS = 24
        prune()
        assert not GuestSample.objects.filter(guest=guest).exists()
        assert HostSample.objects.filter(host=host).exists()
    finally:
        virt.destroy(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
        virt.undefine(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))


def test_the_demo_host_is_not_sampled_and_viewers_read_graphs(
        admin_user: Any, viewer_client: Client) -> None:
    from hosts.services import enrol_host
    from hosts.virt import demo_uri

    demo = enrol_host(name="demo", uri=demo_uri(), user=admin_user)
    assert "demo" not in sample_all()
    web = Guest.objects.get(name="web01")
    answer = viewer_client.get(f"/api/v1/guests/{web.pk}/metrics/")
    assert answer.status_code == 200 and answer.json() == {
        "t": [], "series": {"cpu_percent": [], "memory_mib": [], "disk_read_bps": [],
                            "disk_write_bps": [], "net_rx_bps": [], "net_tx_bps": []}}
    assert viewer_client.get(f"/api/v1/hosts/{demo.pk}/metrics/?minutes=x").status_code == 200
    assert "No samples yet" in viewer_client.get(web.get_absolute_url()).content.decode()
