"""The scale rig and the benchmark report behave (the figures themselves live in
`make bench`, never in tests)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench.report import render
from bench.scale_rig import count_libvirt_calls, make_hosts
from guests.models import Guest
from hosts.virt.connection import drop_connection
from inventory.monitor import sync_inventory

pytestmark = pytest.mark.django_db


def test_rig_hosts_reconcile_with_bulk_calls_and_lists_read_the_cache(
        admin_client: Client, settings: Any, tmp_path: Any) -> None:
    settings.DATA_DIR = tmp_path
    hosts = make_hosts(3, 16)
    try:
        for host in hosts:
            sync_inventory(host)
        assert Guest.objects.filter(host__in=hosts).count() == 3 * 16
        assert set(Guest.objects.values_list("state", flat=True)) == {
            "running", "shutoff", "paused"}
        with count_libvirt_calls() as calls:
            sync_inventory(hosts[0])
        # Bulk facts: per domain only its XML (and a running guest's next-boot XML).
        assert calls["getAllDomainStats"] == 1
        assert "state" not in calls and "autostart" not in calls
        assert calls["XMLDesc"] <= 2 * 16

        def listing(url: str) -> tuple[int, int]:
            with CaptureQueriesContext(connection) as queries, \
                    count_libvirt_calls() as libvirt_calls:
                assert admin_client.get(url).status_code == 200
            return len(queries), sum(libvirt_calls.values())

        listing("/api/v1/guests/")  # the first request also loads the session and roles
        small = listing("/api/v1/guests/")
        more = make_hosts(6, 16)[3:]
        for host in more:
            sync_inventory(host)
        big = listing("/api/v1/guests/")
        assert small[1] == big[1] == 0  # the list never asks libvirt
        assert big[0] == small[0]  # queries do not grow with the inventory
        page = admin_client.get("/guests/?q=h01-vm000")
        assert page.status_code == 200 and "h01-vm0001" in page.content.decode()
    finally:
        for host in hosts:
            drop_connection(host.uri)


def test_report_renders_tables_and_charts() -> None:
    text = render({"machine": {"platform": "Linux", "python": "3.11", "cpus": 2},
                   "started": "now", "benchmarks": {
                       "scale": {"sizes": [{"guests": 100, "api_list": {"p95_ms": 3.5}}],
                                 "chart": "docs/benchmarks-scale.png"},
                       "migration": {"idle": {"total_ratio": 1.06}}}})
    assert "## scale" in text and "![scale](benchmarks-scale.png)" in text
    assert "| `sizes[100].api_list.p95_ms` | 3.5 |" in text
    assert "| `idle.total_ratio` | 1.06 |" in text
