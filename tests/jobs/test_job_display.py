"""The job page: times in the appliance's time zone (log lines too), the result as a table
linking what the job made, and the details read again when the state changes."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client

from xenweb.appliance.models import ApplianceSettings, forget_settings
from xenweb.jobs.display import log_time, result_rows
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter

pytestmark = pytest.mark.django_db

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def test_log_times_are_shown_in_the_zone() -> None:
    assert log_time("2026-12-07T18:00:05Z", BERLIN) == "19:00:05"
    assert log_time("2026-07-07T18:00:05Z", BERLIN) == "20:00:05"  # summer time
    assert log_time("18:00:05", BERLIN) == "18:00:05"  # an older line: as it was stored


def test_result_rows_link_what_the_job_made() -> None:
    rows = result_rows({"guest": 7, "download": "/api/v1/jobs/3/download/",
                        "devices": ["Type: Xen PV", "NIC kept"], "bytes": 1024,
                        "type": "xen", "host": "not-an-id"})
    by_label = {row.label: row for row in rows}
    assert by_label["Guest made"].url == "/guests/7/"
    assert by_label["File"].url == "/api/v1/jobs/3/download/"
    assert by_label["Devices"].value == "Type: Xen PV\nNIC kept" and not by_label["Devices"].url
    assert by_label["Bytes"].value == "1024"
    assert by_label["Host"].url == ""  # not an id: shown, not linked
    assert result_rows(None) == [] and result_rows("done")[0].value == "done"


def test_the_page_shows_times_in_the_appliance_zone_and_the_result_table(
        admin_client: Client, admin_user: Any) -> None:
    row = ApplianceSettings.load()
    row.time_zone = "Europe/Berlin"
    row.save()
    forget_settings()
    started = datetime(2026, 12, 7, 18, 0, 5, tzinfo=UTC)
    job = Job.objects.create(kind="guest.import", title="Import", owner=admin_user,
                             state="running", started_at=started, worker="celery@w1")
    reporter = ProgressReporter(job)
    reporter.log("copied")
    reporter.flush()
    Job.objects.filter(pk=job.pk).update(state="succeeded", finished_at=started,
                                         result={"guest": 42, "type": "xen"})
    page = admin_client.get(f"/jobs/{job.pk}/").content.decode()
    assert '<dd class="col-8" id="job-started">2026-12-07 19:00:05 CET</dd>' in page
    assert 'id="job-worker">celery@w1</dd>' in page
    assert '<a href="/guests/42/">42</a>' in page and "Guest made" in page
    stamp = Job.objects.get(pk=job.pk).log[0][0]
    assert stamp.endswith("Z") and "T" in stamp  # stored in UTC
    shown = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(BERLIN)
    assert f"{shown:%H:%M:%S} copied" in page, page[page.index("job-log"):][:200]
    forget_settings()


@pytest.mark.parametrize("download", ["//evil.example/x", "/\\evil.example/x",
                                      "https://evil.example/x", "javascript:alert(1)"])
def test_a_result_links_only_to_this_site(download: str) -> None:
    row = result_rows({"download": download})[0]
    assert row.url == "" and row.value == download  # shown as text, never a link
