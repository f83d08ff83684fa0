"""The import API on the demo host: who may call it, what inspect answers, and refusals
that answer 422 with a clear message and an audit record, creating nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from hosts.models import Host
from storage.models import Pool, Volume
from tests.conversions.v2v.conftest import MIB, make_vmdk, patterned_raw
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job

pytestmark = pytest.mark.django_db

VMX = 'displayName = "web"\nmemsize = "{memory}"\nnumvcpus = "{vcpus}"\nfirmware = "efi"\n' \
      'guestOS = "windows9-64"\nsata0.present = "TRUE"\nsata0:0.present = "TRUE"\n' \
      'sata0:0.fileName = "web.vmdk"\nsata0:1.present = "TRUE"\n' \
      'sata0:1.deviceType = "cdrom-image"\nsata0:1.fileName = "/vmfs/volumes/x/win.iso"\n' \
      'ethernet0.present = "TRUE"\nethernet0.addressType = "generated"\n' \
      'ethernet0.generatedAddress = "00:0c:29:aa:bb:cc"\nethernet0.virtualDev = "e1000e"\n'


def post(client: Client, path: str, data: dict) -> Any:
    return client.post(path, data, content_type="application/json")


def _vm(area: Path, tmp_path: Path, memory: str = "2048", vcpus: str = "2") -> None:
    make_vmdk(area, "web", "streamOptimized", patterned_raw(tmp_path / "r.raw", 8 * MIB))
    (area / "web.vmx").write_text(VMX.format(memory=memory, vcpus=vcpus))


def test_inspect_proposes_the_guest(operator_client: Client, area: Path,
                                    tmp_path: Path) -> None:
    _vm(area, tmp_path)
    answer = post(operator_client, "/api/v1/imports/inspect/", {"source": "web.vmx"})
    assert answer.status_code == 200, answer.json()
    got = answer.json()
    assert (got["name"], got["type"], got["firmware"], got["vcpus"], got["memory_mib"],
            got["os_family"]) == ("web", "hvm", "efi", 2, 2048, "windows")
    assert [(d["device"], d["bus"], d["format"], d["virtual_size"]) for d in got["disks"]] \
        == [("disk", "sata", "vmdk", 8 * MIB), ("cdrom", "sata", "raw", 0)]
    assert got["nics"] == [{"mac": "00:0c:29:aa:bb:cc", "mac_type": "generated",
                            "model": "e1000e", "network": "", "connection": "bridged",
                            "check_mac": True}]
    assert any("Xen PV drivers" in w for w in got["warnings"])
    assert any("UEFI" in w for w in got["warnings"])


def test_only_operators_may_import(viewer_client: Client, client: Client, area: Path,
                                   tmp_path: Path) -> None:
    _vm(area, tmp_path)
    assert post(viewer_client, "/api/v1/imports/inspect/", {"source": "web.vmx"}) \
        .status_code == 403
    assert post(client, "/api/v1/imports/inspect/", {"source": "web.vmx"}).status_code \
        in (401, 403)
    assert post(viewer_client, "/api/v1/imports/", {"source": "web.vmx", "host": 1,
                                                    "pool": 1}).status_code == 403


@pytest.mark.parametrize(("memory", "vcpus", "message"), [
    ("2048", "0", "0 vCPUs"), ("2048", "1000000000", "1000000000 vCPUs"),
    ("-5", "1", "-5 MiB"), ("2048", "x", "not a number")])
def test_absurd_values_are_refused(operator_client: Client, area: Path, tmp_path: Path,
                                   memory: str, vcpus: str, message: str) -> None:
    _vm(area, tmp_path, memory=memory, vcpus=vcpus)
    answer = post(operator_client, "/api/v1/imports/inspect/", {"source": "web.vmx"})
    assert answer.status_code == 422 and message in answer.json()["detail"]
    assert AuditRecord.objects.filter(action="import.inspect", result="failed").exists()


def test_escaping_source_is_refused(operator_client: Client, area: Path) -> None:
    answer = post(operator_client, "/api/v1/imports/inspect/", {"source": "../xenweb.sqlite3"})
    assert answer.status_code == 422 and "import area" in answer.json()["detail"]


def test_import_refusals_create_nothing(operator_client: Client, demo: Host, area: Path,
                                        tmp_path: Path) -> None:
    _vm(area, tmp_path)
    pool = Pool.objects.filter(host=demo).first()
    volumes = Volume.objects.count()
    wrong_pool = post(operator_client, "/api/v1/imports/", {
        "source": "web.vmx", "host": demo.pk, "pool": 999999})
    assert wrong_pool.status_code == 422 and "not on host" in wrong_pool.json()["detail"]
    bad_name = post(operator_client, "/api/v1/imports/", {
        "source": "web.vmx", "host": demo.pk, "pool": pool.pk, "name": "--"})
    assert bad_name.status_code == 422
    assert not Job.objects.filter(kind="guest.import").exists()
    assert Volume.objects.count() == volumes
    assert AuditRecord.objects.filter(action="guest.import", result="failed").count() == 2


def test_import_answers_202_with_a_job(operator_client: Client, demo: Host, area: Path,
                                       tmp_path: Path) -> None:
    _vm(area, tmp_path)
    pool = Pool.objects.filter(host=demo, active=True).first()
    started = post(operator_client, "/api/v1/imports/", {
        "source": "web.vmx", "host": demo.pk, "pool": pool.pk, "format": "raw"})
    assert started.status_code == 202, started.json()
    job = started.json()
    assert job["kind"] == "guest.import" and job["state"] == "queued"
    assert job["total"] == 8 * MIB


def test_export_refusals(operator_client: Client, viewer_client: Client, demo: Host) -> None:
    from guests.models import Guest

    guest = Guest.objects.filter(host=demo, is_privileged=False).first()
    url = f"/api/v1/guests/{guest.pk}/export/"
    assert post(viewer_client, url, {"format": "xva"}).status_code == 403
    assert post(operator_client, url, {"format": "iso"}).status_code == 400
    answer = post(operator_client, url, {"format": "xva"})
    assert answer.status_code == 422 and answer.json()["detail"]
    assert not Job.objects.filter(kind="guest.export").exists()
    assert AuditRecord.objects.filter(action="guest.export", result="failed").exists()


def put(client: Client, path: str, data: bytes) -> Any:
    return client.put(path, data, content_type="application/octet-stream")


def test_upload_into_the_import_area(operator_client: Client, viewer_client: Client,
                                     area: Path, tmp_path: Path) -> None:
    _vm(tmp_path, tmp_path)
    # With or without the trailing slash; the extension is the file's, never a format.
    for name, slash in (("web.vmx", "/"), ("web.vmdk", "")):
        stored = put(operator_client, f"/api/v1/imports/files/up/{name}{slash}",
                     (tmp_path / name).read_bytes())
        assert stored.status_code == 201, stored.json()
        assert stored.json()["source"] == f"up/{name}"
    assert post(operator_client, "/api/v1/imports/inspect/", {"source": "up/web.vmx"}) \
        .status_code == 200
    again = put(operator_client, "/api/v1/imports/files/up/web.vmx/", b"x")
    assert again.status_code == 422 and "exists already" in again.json()["detail"]
    assert put(viewer_client, "/api/v1/imports/files/v.vmx/", b"x").status_code == 403
    assert put(viewer_client, "/api/v1/imports/files/v.vmx", b"x").status_code == 403
    for bad in ("../escape.vmx", ".hidden", "a/../../b"):
        refused = put(operator_client, f"/api/v1/imports/files/{bad}/", b"x")
        assert refused.status_code in (404, 422), bad
    assert sorted(p.name for p in (area / "up").iterdir()) == ["web.vmdk", "web.vmx"]
    assert AuditRecord.objects.filter(action="import.upload", result="ok").count() == 2


def test_over_long_source_paths_are_refused_not_server_errors() -> None:
    from conversions.v2v.proposal import ImportRefused
    from conversions.v2v.sources import resolve_source

    for source in ("0" * 1000, "0" * 300, "dir/" + "b" * 300, "x" * 5000):
        with pytest.raises(ImportRefused):
            resolve_source(source)
