"""The V2V pages: the import area listed, a source inspected and imported from the browser,
bad input answered on the page; the export form on the guest page."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from guests.models import Guest
from hosts.models import Host
from storage.models import Pool
from tests.conversions.v2v.test_import_api import _vm
from xenweb.jobs.models import Job

pytestmark = pytest.mark.django_db


def test_import_from_the_page(operator_client: Client, demo: Host, area: Path,
                              tmp_path: Path) -> None:
    _vm(area, tmp_path)
    page = operator_client.get("/storage/v2v/").content.decode()
    assert "<code>web.vmx</code>" in page and str(area) in page

    inspected = operator_client.post("/storage/v2v/", {"step": "inspect", "source": "web.vmx"})
    html = inspected.content.decode()
    assert inspected.status_code == 200 and 'id="v2v-start"' in html
    assert "VMX: web.vmx" in html and "EFI" in html and "00:0c:29:aa:bb:cc" in html
    assert "Xen PV drivers" in html  # the proposal's warnings are shown

    pool = Pool.objects.filter(host=demo, active=True).first()
    started = operator_client.post("/storage/v2v/", {
        "step": "start", "source": "web.vmx", "pool": pool.pk, "format": "raw",
        "name": "web-imported", "type": "hvm", "vcpus": "2", "memory_mib": "1024",
        "network": "default", "keep_macs": "on"})
    job = Job.objects.get(kind="guest.import")
    assert started.status_code == 302 and started["Location"] == f"/jobs/{job.pk}/"
    assert (job.params["name"], job.params["host"], job.params["memory_mib"]) == \
        ("web-imported", demo.pk, 1024)
    assert 'id="job-guest"' in operator_client.get(f"/jobs/{job.pk}/").content.decode()


@pytest.mark.parametrize(("data", "message"), [
    ({"step": "inspect", "source": "../../etc/passwd"}, "import area"),
    ({"step": "inspect", "source": "missing.vmx"}, "missing.vmx"),
    ({"step": "start", "source": "web.vmx", "pool": "999999"}, "Choose the pool"),
    ({"step": "start", "source": "web.vmx", "pool": "", "vcpus": "many"}, "Choose the pool"),
])
def test_bad_input_is_answered_on_the_page(operator_client: Client, demo: Host, area: Path,
                                           tmp_path: Path, data: dict, message: str) -> None:
    _vm(area, tmp_path)
    answer = operator_client.post("/storage/v2v/", data)
    html = answer.content.decode()
    assert answer.status_code == 200 and 'id="v2v-error"' in html
    assert message in html, html[html.find("v2v-error"):][:400]
    assert not Job.objects.filter(kind="guest.import").exists()
    if data["step"] == "start":
        assert 'id="v2v-start"' in html  # the adjustments are shown again


def test_viewers_cannot_import(viewer_client: Client, area: Path) -> None:
    assert viewer_client.get("/storage/v2v/").status_code == 403
    assert viewer_client.post("/storage/v2v/", {"step": "inspect", "source": "x"}) \
        .status_code == 403


def test_export_form_on_the_guest_page(operator_client: Client, viewer_client: Client,
                                       demo: Host) -> None:
    guest = Guest.objects.filter(host=demo, is_privileged=False).first()
    page = operator_client.get(f"/guests/{guest.pk}/").content.decode()
    assert 'id="export"' in page and 'value="xva"' in page
    url = f"/storage/v2v/export/{guest.pk}/"
    refused = operator_client.post(url, {"format": "xva"}, follow=True)
    assert "The export was not started" in refused.content.decode()
    assert not Job.objects.filter(kind="guest.export").exists()
    assert viewer_client.post(url, {"format": "xva"}).status_code == 403
    assert 'id="export"' not in viewer_client.get(f"/guests/{guest.pk}/").content.decode()
