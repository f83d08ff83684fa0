"""The seed's V2V in one action: `POST /api/v1/imports/ {"source": ..., "output": "xva"}`
(and the page's "Convert to XVA") writes an XVA file and defines nothing. The XVA is checked
by the spec-written checker of test_export_lab, and imported again."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from defusedxml import ElementTree as SafeET
from django.test import Client

from conversions.v2v.xva_output import run_convert_to_xva
from guests.models import Guest
from storage.models import Volume
from tests.conversions.v2v.conftest import MIB, make_vmdk, patterned_raw
from tests.conversions.v2v.test_export_lab import _xmlrpc, check_xva
from tests.conversions.v2v.test_import_api import post
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db

VMX = ('displayName = "seed"\nmemsize = "512"\nnumvcpus = "2"\nguestOS = "debian12-64"\n'
       'scsi0.present = "TRUE"\nscsi0.virtualDev = "lsilogic"\n'
       'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "seed.vmdk"\n'
       'ethernet0.present = "TRUE"\nethernet0.virtualDev = "vmxnet3"\n'
       'ethernet0.addressType = "static"\nethernet0.address = "00:50:56:01:02:03"\n')


def _vmware_dir(area: Path, tmp_path: Path, subformat: str) -> bytes:
    raw = patterned_raw(tmp_path / "seed.raw", 5 * MIB + 4096)
    vm = area / "vm"
    vm.mkdir()
    make_vmdk(vm, "seed", subformat, raw)
    (vm / "vm.vmx").write_text(VMX)
    return raw.read_bytes()


def _convert(client: Client, **extra: Any) -> Job:
    started = post(client, "/api/v1/imports/", {"source": "vm/vm.vmx", "output": "xva",
                                                **extra})
    assert started.status_code == 202, started.json()
    run_job(started.json()["id"], run_convert_to_xva, task_id="t", worker="w")
    return Job.objects.get(pk=started.json()["id"])


def _vm_record(data: bytes) -> dict[str, Any]:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        header = _xmlrpc(SafeET.fromstring(tar.extractfile("ova.xml").read()))
    return next(o["snapshot"] for o in header["objects"] if o["class"] == "VM")


@pytest.mark.parametrize("subformat", ["monolithicSparse", "twoGbMaxExtentSparse"])
def test_a_vmware_vm_becomes_an_xva_in_one_call(operator_client: Client, area: Path,
                                                tmp_path: Path, subformat: str) -> None:
    disk = _vmware_dir(area, tmp_path, subformat)
    guests, volumes = Guest.objects.count(), Volume.objects.count()
    job = _convert(operator_client)
    assert job.state == "succeeded", job.error
    assert (job.kind, job.result["format"], job.result["name"]) == ("import.xva", "xva", "seed")
    assert (Guest.objects.count(), Volume.objects.count()) == (guests, volumes)  # nothing made

    download = operator_client.get(job.result["download"])
    assert download.status_code == 200
    data = b"".join(download.streaming_content)
    assert list(check_xva(data).values()) == [disk]
    vm = _vm_record(data)
    assert (vm["name_label"], vm["VCPUs_max"], int(vm["memory_static_max"])) == (
        "seed", "2", 512 * MIB)
    assert AuditRecord.objects.filter(action="import.xva", result="ok").exists()

    # The XVA imports again: the same VM, disk and kept MAC.
    shutil.copy(tmp_path / "data" / "export" / job.result["file"], area / "seed.xva")
    proposal = post(operator_client, "/api/v1/imports/inspect/", {"source": "seed.xva"}).json()
    assert (proposal["kind"], proposal["name"], proposal["vcpus"], proposal["memory_mib"]) == (
        "xva", "seed", 2, 512)
    assert [d["virtual_size"] for d in proposal["disks"] if d["device"] == "disk"] == [
        len(disk)]
    assert [n["mac"] for n in proposal["nics"]] == ["00:50:56:01:02:03"]


def test_new_macs_when_not_kept(operator_client: Client, area: Path, tmp_path: Path) -> None:
    _vmware_dir(area, tmp_path, "monolithicSparse")
    job = _convert(operator_client, keep_macs=False, name="renamed", compress="gzip")
    assert job.state == "succeeded", job.error
    assert job.result["file"].endswith("-renamed.xva")
    shutil.copy(tmp_path / "data" / "export" / job.result["file"], area / "r.xva")
    proposal = post(operator_client, "/api/v1/imports/inspect/", {"source": "r.xva"}).json()
    assert proposal["name"] == "renamed"
    assert [n["mac"] for n in proposal["nics"]] != ["00:50:56:01:02:03"]


def test_what_cannot_become_an_xva_is_refused(operator_client: Client, viewer_client: Client,
                                               area: Path, tmp_path: Path) -> None:
    _vmware_dir(area, tmp_path, "monolithicSparse")
    jobs = Job.objects.count()
    assert post(viewer_client, "/api/v1/imports/", {"source": "vm/vm.vmx",
                                                    "output": "xva"}).status_code == 403
    missing = post(operator_client, "/api/v1/imports/", {"source": "vm/vm.vmx"})
    assert missing.status_code == 400
    assert set(missing.json()) >= {"host", "pool"}
    bad = post(operator_client, "/api/v1/imports/", {"source": "vm/vm.vmx", "output": "iso"})
    assert bad.status_code == 400 and "output" in bad.json()
    (area / "already.xva").write_bytes(b"")
    for source, says in (("vm/missing.vmx", "vm/missing.vmx"), ("../x.vmx", "import area")):
        refused = post(operator_client, "/api/v1/imports/", {"source": source,
                                                             "output": "xva"})
        assert refused.status_code == 422 and says in refused.json()["detail"], refused.json()
    assert Job.objects.count() == jobs
    assert AuditRecord.objects.filter(action="import.xva", result="failed").count() == 2


def test_the_page_converts_to_xva(operator_client: Client, area: Path, tmp_path: Path) -> None:
    _vmware_dir(area, tmp_path, "monolithicSparse")
    inspected = operator_client.post("/storage/v2v/", {"step": "inspect", "source": "vm/vm.vmx"})
    assert b'id="v2v-to-xva"' in inspected.content
    started = operator_client.post("/storage/v2v/", {"step": "start", "source": "vm/vm.vmx",
                                             "output": "xva", "keep_macs": "on"})
    assert started.status_code == 302
    job = Job.objects.latest("pk")
    assert started["Location"].endswith(f"/{job.pk}/") and job.kind == "import.xva"
    assert "pool" not in job.params and job.params["output"] == "xva"


# --- what a request names: a source in the import area, a name, who may download ------------


@pytest.mark.parametrize("name", ["../../etc/evil", "/abs/evil", "a/b", ".hidden", "x,y?z@@w"])
def test_the_xva_name_never_leaves_the_export_area(operator_client: Client, area: Path,
                                                   tmp_path: Path, name: str) -> None:
    _vmware_dir(area, tmp_path, "monolithicSparse")
    job = _convert(operator_client, name=name)
    assert job.state == "succeeded", job.error
    exported = tmp_path / "data" / "export"
    assert "/" not in job.result["file"] and (exported / job.result["file"]).is_file()
    assert [p.name for p in exported.iterdir()] == [job.result["file"]]


@pytest.mark.parametrize("source", ["/etc/passwd", "../../etc/passwd", "vm/../../x.vmx",
                                    "link/vm.vmx", "vm/vm.vmx\0.txt"])
def test_an_xva_reads_only_the_import_area(operator_client: Client, area: Path,
                                           tmp_path: Path, source: str) -> None:
    _vmware_dir(area, tmp_path, "monolithicSparse")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copytree(area / "vm", outside / "vm")
    (area / "link").symlink_to(outside / "vm")  # a directory link out of the area
    jobs = Job.objects.count()
    answer = post(operator_client, "/api/v1/imports/", {"source": source, "output": "xva"})
    assert answer.status_code in (400, 422), answer.content
    assert Job.objects.count() == jobs


def test_only_its_owner_and_admins_download_an_xva(operator_client: Client, area: Path,
                                                   tmp_path: Path, viewer_client: Client,
                                                   admin_client: Client) -> None:
    from tests.conftest import logged_in, make_user

    _vmware_dir(area, tmp_path, "monolithicSparse")
    job = _convert(operator_client)
    other = logged_in(make_user("other-operator", "operator"))
    assert other.get(job.result["download"]).status_code == 404
    assert viewer_client.get(job.result["download"]).status_code in (403, 404)
    assert admin_client.get(job.result["download"]).status_code == 200
