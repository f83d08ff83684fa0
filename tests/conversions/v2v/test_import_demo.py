"""The import job on the demo host (libvirt's test driver, which cannot take a volume's
bytes): its volumes are made through the storage services and audited, and a failure
leaves nothing of the import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from conversions.v2v import import_job
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget, domains
from storage.models import Pool, Volume
from tests.conversions.v2v.test_import_api import _vm, post
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db


def _run(client: Client, demo: Host, **extra: Any) -> tuple[Job, Pool]:
    pool = Pool.objects.get(host=demo, name="default")
    started = post(client, "/api/v1/imports/", {"source": "web.vmx", "host": demo.pk,
                                                "pool": pool.pk, **extra})
    assert started.status_code == 202, started.json()
    run_job(started.json()["id"], import_job.run_import, task_id="t", worker="w")
    return Job.objects.get(pk=started.json()["id"]), pool


def test_a_failed_conversion_keeps_nothing(operator_client: Client, demo: Host, area: Path,
                                           tmp_path: Path) -> None:
    _vm(area, tmp_path)
    volumes = set(Volume.objects.values_list("pk", flat=True))
    job, _pool = _run(operator_client, demo, format="raw")
    assert job.state == "failed"
    assert "virStorageVolUpload" in job.error  # the test driver takes no bytes
    assert job.error.endswith("Nothing of the import was kept.")
    assert set(Volume.objects.values_list("pk", flat=True)) == volumes
    assert not Guest.objects.filter(name="web").exists()
    made = AuditRecord.objects.get(action="volume.create", target_label="web-disk0.img")
    removed = AuditRecord.objects.get(action="volume.delete", target_label="web-disk0.img")
    assert made.target_id == removed.target_id and made.result == removed.result == "ok"
    assert AuditRecord.objects.filter(action="guest.import", result="failed").exists()


def test_an_import_defines_the_guest_on_its_checked_volumes(
        operator_client: Client, demo: Host, area: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _vm(area, tmp_path)
    monkeypatch.setattr(import_job, "_upload_file", lambda *args: None)
    job, pool = _run(operator_client, demo, format="qcow2")
    assert job.state == "succeeded", job.error
    guest = Guest.objects.get(pk=job.result["guest"])
    volume = Volume.objects.get(pool=pool, name="web-disk0.qcow2")
    assert job.result["volumes"] == [volume.path]
    assert volume.content_state == "ready" and volume.content_job is None
    defined = domains.get_domain(VirtTarget(demo.uri), str(guest.uuid)).xml
    assert [(d.target, d.source, d.format) for d in defined.disks] == [
        ("vda", volume.path, "qcow2")]
    assert [nic.mac for nic in defined.nics] == ["00:0c:29:aa:bb:cc"]
    assert AuditRecord.objects.filter(action="volume.create", result="ok",
                                      target_id=str(volume.pk)).exists()
    assert AuditRecord.objects.filter(action="guest.import", result="ok").exists()
