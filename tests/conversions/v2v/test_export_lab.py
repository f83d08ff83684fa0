"""Export on a lab host: guest → XVA checked against the format's rules by a reader
written here from the spec (not the app's own reader) → import → volumes equal; one
disk → qcow2/vmdk equal; refusals and permissions."""

from __future__ import annotations

import io
import re
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import xxhash
from defusedxml import ElementTree as SafeET
from django.test import Client

from conversions.v2v.export_job import run_export
from conversions.v2v.import_job import run_import
from guests.models import Guest
from hosts.virt import VirtTarget, domains
from storage.models import Pool
from tests.conversions.v2v.conftest import MIB, qemu_img
from tests.conversions.v2v.test_import_lab import _start, _vm
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db
CHUNK = 1024 * 1024
VERSION_KEYS = {"hostname", "date", "product_version", "product_brand", "build_number",
                "xapi_major", "xapi_minor", "export_vsn"}


def _xmlrpc(element: Any) -> Any:
    children = list(element)
    if not children:
        return element.text or ""
    typed = children[0]
    if typed.tag == "struct":
        return {m.findtext("name"): _xmlrpc(m.find("value")) for m in typed.findall("member")}
    if typed.tag == "array":
        return [_xmlrpc(v) for v in typed.find("data").findall("value")]
    return typed.text or ""


def check_xva(data: bytes) -> dict[str, bytes]:
    """The format's rules, checked member by member; returns {VDI ref: disk bytes}."""
    tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    members = tar.getmembers()
    assert members[0].name == "ova.xml"
    header = _xmlrpc(SafeET.fromstring(tar.extractfile(members[0]).read()))
    assert VERSION_KEYS <= set(header["version"]) and header["version"]["export_vsn"] == "2"
    objects = header["objects"]
    assert {"VM", "VBD", "VDI", "VIF", "SR"} <= {o["class"] for o in objects}
    vdis = {o["id"]: int(o["snapshot"]["virtual_size"]) for o in objects
            if o["class"] == "VDI"}
    disks: dict[str, bytearray] = {}
    seen_refs: list[str] = []
    last: dict[str, int] = {}
    rest = members[1:]
    assert len(rest) % 2 == 0
    for chunk, digest in zip(rest[::2], rest[1::2], strict=True):
        match = re.fullmatch(r"(Ref:\d+)/(\d{8})", chunk.name)
        assert match, chunk.name
        assert digest.name == chunk.name + ".xxhash"
        ref, index = match.group(1), int(match.group(2))
        body = tar.extractfile(chunk).read()
        assert tar.extractfile(digest).read().decode() == xxhash.xxh64(body).hexdigest()
        if ref not in disks:
            seen_refs.append(ref)
            disks[ref] = bytearray(vdis[ref])
        assert index > last.get(ref, -1)
        last[ref] = index
        final = (vdis[ref] - 1) // CHUNK
        assert len(body) == (CHUNK if index < final else vdis[ref] - final * CHUNK)
        if 0 < index < final:
            assert body != bytes(len(body)), "zero chunks are omitted"
        disks[ref][index * CHUNK:index * CHUNK + len(body)] = body
    assert seen_refs == sorted(seen_refs) and set(seen_refs) == set(vdis)
    for ref in vdis:
        first_member = f"{ref}/00000000"
        assert first_member in {m.name for m in rest}
        assert last[ref] == (vdis[ref] - 1) // CHUNK
    return {ref: bytes(body) for ref, body in disks.items()}


def _imported_guest(client: Client, pool: Pool, area: Path, tmp_path: Path) -> tuple[
        Guest, list[Path], list[str]]:
    raws = _vm(area, tmp_path, f"exp-{uuid.uuid4().hex[:6]}")
    started = _start(client, area, pool)
    run_job(started.json()["id"], run_import, task_id="t", worker="w")
    job = Job.objects.get(pk=started.json()["id"])
    assert job.state == "succeeded", job.error
    return Guest.objects.get(pk=job.result["guest"]), list(raws), job.result["volumes"]


def _export(client: Client, guest: Guest, **body: Any) -> Job:
    started = client.post(f"/api/v1/guests/{guest.pk}/export/", body,
                          content_type="application/json")
    assert started.status_code == 202, started.json()
    run_job(started.json()["id"], run_export, task_id="t", worker="w")
    job = Job.objects.get(pk=started.json()["id"])
    assert job.state == "succeeded", job.error
    return job


def _download(client: Client, job: Job) -> bytes:
    answer = client.get(job.result["download"])
    assert answer.status_code == 200
    return b"".join(answer.streaming_content)


def test_guest_to_xva_to_guest(operator_client: Client, viewer_client: Client,
                               local_pool: Pool, lab_area: Path, tmp_path: Path) -> None:
    guest, raws, volumes = _imported_guest(operator_client, local_pool, lab_area, tmp_path)
    made = list(volumes)
    try:
        job = _export(operator_client, guest, format="xva")
        assert job.done == job.total == 24 * MIB
        assert viewer_client.get(job.result["download"]).status_code == 403
        data = _download(operator_client, job)
        disks = check_xva(data)
        assert [disks[ref] for ref in sorted(disks)] == [r.read_bytes() for r in raws]

        (lab_area / "back.xva").write_bytes(data)
        guest.name = guest.name + "-old"  # the re-import may reuse the name on the host
        domains.undefine(VirtTarget(guest.host.uri, allow_insecure=True), str(guest.uuid))
        guest.delete()
        again = operator_client.post("/api/v1/imports/", {
            "source": f"{lab_area.name}/back.xva", "host": local_pool.host_id,
            "pool": local_pool.pk, "format": "raw"}, content_type="application/json")
        assert again.status_code == 202, again.json()
        run_job(again.json()["id"], run_import, task_id="t", worker="w")
        job2 = Job.objects.get(pk=again.json()["id"])
        assert job2.state == "succeeded", job2.error
        made += job2.result["volumes"]
        for raw, volume in zip(raws, job2.result["volumes"], strict=True):
            qemu_img("compare", "-f", "raw", "-F", "raw", str(raw), volume)
        new = Guest.objects.get(pk=job2.result["guest"])
        domains.undefine(VirtTarget(new.host.uri, allow_insecure=True), str(new.uuid))
    finally:
        if Guest.objects.filter(pk=guest.pk).exists():
            domains.undefine(VirtTarget(guest.host.uri, allow_insecure=True), str(guest.uuid))
        for path in made:
            Path(path).unlink(missing_ok=True)


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk", "raw"])
def test_one_disk_exports_equal(operator_client: Client, local_pool: Pool, lab_area: Path,
                                tmp_path: Path, fmt: str) -> None:
    guest, raws, volumes = _imported_guest(operator_client, local_pool, lab_area, tmp_path)
    try:
        job = _export(operator_client, guest, format=fmt, disk=1)
        out = tmp_path / f"disk.{fmt}"
        out.write_bytes(_download(operator_client, job))
        qemu_img("compare", "-f", "raw", "-F", fmt, str(raws[1]), str(out))
    finally:
        domains.undefine(VirtTarget(guest.host.uri, allow_insecure=True), str(guest.uuid))
        for path in volumes:
            Path(path).unlink(missing_ok=True)


def test_guest_to_ova_to_guest(operator_client: Client, local_pool: Pool, lab_area: Path,
                               tmp_path: Path) -> None:
    guest, raws, volumes = _imported_guest(operator_client, local_pool, lab_area, tmp_path)
    made = list(volumes)
    try:
        job = _export(operator_client, guest, format="ova")
        (lab_area / "back.ova").write_bytes(_download(operator_client, job))
        inspected = operator_client.post("/api/v1/imports/inspect/",
                                         {"source": f"{lab_area.name}/back.ova"},
                                         content_type="application/json")
        assert inspected.status_code == 200, inspected.json()
        proposal = inspected.json()
        assert (proposal["vcpus"], proposal["memory_mib"]) == (2, 256)
        assert proposal["nics"][0]["mac"] == "00:50:56:01:02:03"
        again = operator_client.post("/api/v1/imports/", {
            "source": f"{lab_area.name}/back.ova", "host": local_pool.host_id,
            "pool": local_pool.pk, "format": "qcow2", "name": guest.name + "-b"},
            content_type="application/json")
        assert again.status_code == 202, again.json()
        run_job(again.json()["id"], run_import, task_id="t", worker="w")
        job2 = Job.objects.get(pk=again.json()["id"])
        assert job2.state == "succeeded", job2.error
        made += job2.result["volumes"]
        for raw, volume in zip(raws, job2.result["volumes"], strict=True):
            qemu_img("compare", "-f", "raw", "-F", "qcow2", str(raw), volume)
        new = Guest.objects.get(pk=job2.result["guest"])
        domains.undefine(VirtTarget(new.host.uri, allow_insecure=True), str(new.uuid))
    finally:
        domains.undefine(VirtTarget(guest.host.uri, allow_insecure=True), str(guest.uuid))
        for path in made:
            Path(path).unlink(missing_ok=True)
