"""Whole import of a bootable VMware VM beside bare `qemu-img convert` of the same disk.

The source is the lab's boot disk (lab/bootdisk.py: MBR + SYSLINUX, FAT /boot with Debian's
kernel and an initramfs, ext4 root) as a VMware VM directory (.vmx with lsilogic SCSI and
vmxnet3, the disk a monolithicSparse VMDK made by `qemu-img convert -O vmdk -o
subformat=monolithicSparse`), in two sizes: the 49 MiB disk itself ("boot"), and the same
disk grown by a third partition of 1280 MiB whose first GiB is random data ("big"), so that
the copy, not the fixed costs, dominates.

For each disk and each output format (raw, qcow2), in the same run, ROUNDS rounds in
alternating order, each started with the page cache written back (bench.stats.quiet_start):

- bare: `qemu-img convert -f vmdk -O <format>` of the VMDK into the pool's directory;
- import: the product's whole import on a lab host (a libvirtd of the lab, `local` dir pool,
  whose files this machine writes) of the VM directory under a new name, as the V2V page
  runs it: the preview (Inspect: the guest inspected and remembered; not timed), then
  `start_import` (the API's checks: the source read and checked, the inspection found
  again) timed apart, then the job body run synchronously as the tests run it
  (`run_job(..., run_import)`: the source read and checked again, its inspection found
  again, the volume made by libvirt, qemu-img under prlimit with progress, the output
  checked, the guest defined).

Goal: bare / import >= 0.85 (`ratio_job`, of the medians; `ratio_whole` counts
`start_import` too; the preview's cold inspection is `parts_ms.inspection`, once per
source; `ratio_of_best_rounds` compares the fastest rounds, less sensitive to what else
runs on the machine). Printed, never asserted.
`overhead_seconds` is the job's time beyond the bare conversion, and `goal_from_mib` the
disk size from which that fixed cost is under 15% of the job at this bare speed. Where the
time of an import goes is measured beside it, once per disk (`parts_ms`): reading and
checking the source (`inspect`, which the preview, the start and the job each do),
inspecting the guest cold (`inspection`, once per source) and remembered
(`inspection_remembered`), the guest conversion for Xen PV of a raw copy
(`guest_conversion_xen_pv`: fstab and extlinux.conf rewritten with debugfs/mtools, e2fsck,
read back; PV imports only, which the lab's QEMU hosts do not run), and checking the output
(`check_output`: qemu-img info of the written volume and libvirt's report).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model

from bench.stats import quiet_start
from conversions.inspection.inspector import inspect_image
from conversions.rewrite.convert import XEN_PV, convert_guest
from conversions.v2v import guest_devices
from conversions.v2v.import_job import run_import
from conversions.v2v.inspect import inspect
from conversions.v2v.services import inspect_source as preview
from conversions.v2v.services import start_import
from conversions.v2v.sources import import_root
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget, domains
from hosts.virt import volumes as virt
from lab.bootdisk import DISK_SECTORS, SECTOR, Partition, ensure_boot_disk, mbr_bytes, partitions
from lab.daemons import lab_down, lab_up
from lab.register import register_lab_host
from storage.images import check_file
from storage.inventory import reconcile_pools
from storage.models import Pool
from tests.conversions.v2v.test_boot_lab import MAC, VMX
from xenweb.jobs.runner import run_job

ROUNDS = 5
MIB = 1024**2
EXTRA_MIB = 1280  # the big disk's third partition
DATA_MIB = 1024  # random data in it (after one MiB of zeros: no file system signature)
FORMATS = ("raw", "qcow2")
PART_ROUNDS = 5


def _grown(raw: Path, out: Path) -> Path:
    """The boot disk with a third partition of EXTRA_MIB holding DATA_MIB of random data."""
    shutil.copyfile(raw, out)
    with open(out, "r+b") as disk:
        mbr = disk.read(SECTOR)
        third = Partition(DISK_SECTORS, EXTRA_MIB * MIB // SECTOR, 0x83)
        disk.seek(0)
        disk.write(mbr_bytes(mbr[:440], (*partitions(), third),
                             struct.unpack_from("<I", mbr, 440)[0]))
        disk.truncate((DISK_SECTORS * SECTOR) + EXTRA_MIB * MIB)
        disk.seek(DISK_SECTORS * SECTOR + MIB)
        for _ in range(DATA_MIB):
            disk.write(os.urandom(MIB))
    return out


def _vm(area: Path, name: str, raw: Path) -> Path:
    """A VMware VM directory `area/name` (vm.vmx, disk0.vmdk) holding `raw`; the VMDK."""
    vm = area / name
    vm.mkdir()
    vmdk = vm / "disk0.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                    "subformat=monolithicSparse", str(raw), str(vmdk)], check=True)
    (vm / "vm.vmx").write_text(VMX.format(name=name, mac=MAC))
    return vmdk


def _timed(fn: Callable[[], Any]) -> float:
    quiet_start()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _median_ms(fn: Callable[[], Any]) -> float:
    runs = []
    for _ in range(PART_ROUNDS):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return round(statistics.median(runs) * 1000, 1)


class _Rig:
    """The lab host, its `local` pool and a user; imports and bare conversions into it."""

    def __init__(self, host: Host, pool: Pool, user: Any) -> None:
        self.host, self.pool, self.user = host, pool, user

    def bare(self, vmdk: Path, fmt: str) -> float:
        out = Path(self.pool.target_path) / f"bench-bare-{uuid.uuid4().hex[:6]}.{fmt}"
        try:
            return _timed(lambda: subprocess.run(
                ["qemu-img", "convert", "-f", "vmdk", "-O", fmt, str(vmdk), str(out)],
                check=True))
        finally:
            out.unlink(missing_ok=True)

    def imported(self, source: str, fmt: str) -> tuple[float, float]:
        """(start_import seconds, job seconds) of one whole import, removed afterwards."""
        params = {"source": source, "host": self.host.pk, "pool": self.pool.pk,
                  "format": fmt, "name": f"bench-{uuid.uuid4().hex[:6]}"}
        job: Any = None

        def start() -> None:
            nonlocal job
            job = start_import(params, user=self.user)

        start_s = _timed(start)
        job_s = _timed(lambda: run_job(job.pk, run_import, task_id=f"bench-{job.pk}",
                                       worker="bench"))
        job.refresh_from_db()
        if job.state != "succeeded":
            raise RuntimeError(f"import failed: {job.error}")
        guest = Guest.objects.get(pk=job.result["guest"])
        domains.undefine(VirtTarget(self.host.uri, allow_insecure=True), str(guest.uuid))
        for path in job.result["volumes"]:
            Path(path).unlink(missing_ok=True)
        return start_s, job_s

    def parts(self, source: str, vmdk: Path, raw: Path) -> dict[str, float]:
        """Where an import's fixed costs go, each the median of PART_ROUNDS runs."""
        proposal = inspect(source)
        out = Path(self.pool.target_path) / f"bench-part-{uuid.uuid4().hex[:6]}.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(vmdk),
                        str(out)], check=True)
        target = self.host.virt_target
        virt.describe_pool(target, self.pool.name, refresh=True)  # libvirt learns the file
        guest_devices.inspect_source(proposal)  # remembered from here on
        found = inspect_image(raw)
        copies = [raw.with_name(f"pv-{n}.raw") for n in range(PART_ROUNDS)]
        for copy in copies:
            shutil.copyfile(raw, copy)
        try:
            return {
                "inspect": _median_ms(lambda: inspect(source)),
                "inspection": _median_ms(lambda: guest_devices.inspect_disk(
                    str(vmdk), "vmdk", "bench", [])),
                "inspection_remembered": _median_ms(
                    lambda: guest_devices.inspect_source(proposal)),
                "guest_conversion_xen_pv": _median_ms(
                    lambda: convert_guest(str(copies.pop()), found, XEN_PV)),
                "check_output": _median_ms(lambda: (check_file(str(out), "qcow2"),
                                                    virt.content_report(target, str(out)))),
            }
        finally:
            out.unlink(missing_ok=True)
            for copy in raw.parent.glob("pv-*.raw"):
                copy.unlink()


def _fresh(vm: Path) -> Path:
    """The VM directory under a new name, its files hard links (no data copied, so both
    sides read the same cached bytes): nothing is remembered for the new paths, and the
    preview inspects it cold, as for a new source."""
    copy = vm.with_name(f"{vm.name}-{uuid.uuid4().hex[:6]}")
    shutil.copytree(vm, copy, copy_function=os.link)
    return copy


def _case(rig: _Rig, source: str, vmdk: Path, fmt: str, size: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"bare": [], "start": [], "job": []}

    def bare() -> None:
        times["bare"].append(rig.bare(vmdk, fmt))

    def whole() -> None:
        copy = _fresh(vmdk.parent)
        fresh = f"{source.split('/')[0]}/{copy.name}/vm.vmx"
        try:
            preview(fresh, user=rig.user)  # the page's Inspect step (not timed)
            start_s, job_s = rig.imported(fresh, fmt)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        times["start"].append(start_s)
        times["job"].append(job_s)

    for rnd in range(ROUNDS):  # alternating which goes first
        for step in ((bare, whole) if rnd % 2 == 0 else (whole, bare)):
            step()
    bare_s, start_s, job_s = (statistics.median(times[k]) for k in ("bare", "start", "job"))
    overhead = max(job_s - bare_s, 0.001)
    return {
        "bare_seconds": round(bare_s, 3), "start_seconds": round(start_s, 3),
        "job_seconds": round(job_s, 3),
        "bare_mib_s": round(size / bare_s / MIB, 1), "job_mib_s": round(size / job_s / MIB, 1),
        "ratio_job": round(bare_s / job_s, 3),
        "ratio_whole": round(bare_s / (start_s + job_s), 3),
        "ratio_of_best_rounds": round(min(times["bare"]) / min(times["job"]), 3),
        # The job's fixed cost, and the disk at which it would be 15% of the job (the goal)
        # at this bare speed.
        "overhead_seconds": round(overhead, 3),
        "goal_from_mib": round(size / bare_s / MIB * overhead * 0.85 / 0.15),
        "rounds": {k: [round(t, 3) for t in v] for k, v in times.items()},
    }


def _lab_rig(root: Path) -> _Rig:
    lab = lab_up(1, root=root / "lab")[0]
    Host.objects.filter(name=lab.name).delete()  # a previous run's lab, gone now
    host, _ = register_lab_host(lab)
    reconcile_pools(host)
    pool = Pool.objects.get(host=host, name="local")
    user, _ = get_user_model().objects.get_or_create(username="bench-import-boot")
    return _Rig(host, pool, user)


def run() -> dict[str, Any]:
    boot = ensure_boot_disk("bench-src", "device")
    with tempfile.TemporaryDirectory(prefix="xenweb-bench-import-boot-") as tmp:
        root = Path(tmp)
        area = import_root() / f"bench-boot-{uuid.uuid4().hex[:6]}"
        area.mkdir(parents=True)
        try:
            rig = _lab_rig(root)
            raws = {"boot": boot.path, "big": _grown(boot.path, root / "big.raw")}
            disks = {name: _vm(area, name, raw) for name, raw in raws.items()}
            out: dict[str, Any] = {"rounds": ROUNDS, "goal_ratio": 0.85}
            for name, vmdk in disks.items():
                source = f"{area.name}/{name}/vm.vmx"
                size = inspect(source).images[0].virtual_size
                entry: dict[str, Any] = {"virtual_mib": size // MIB,
                                         "vmdk_mib": round(vmdk.stat().st_size / MIB, 1),
                                         "parts_ms": rig.parts(source, vmdk, raws[name])}
                for fmt in FORMATS:
                    entry[fmt] = _case(rig, source, vmdk, fmt, size)
                    print(f"  {name} {fmt}: bare {entry[fmt]['bare_seconds']} s, start "
                          f"{entry[fmt]['start_seconds']} s, job {entry[fmt]['job_seconds']} "
                          f"s, bare/job {entry[fmt]['ratio_job']}, bare/(start+job) "
                          f"{entry[fmt]['ratio_whole']}", flush=True)
                out[name] = entry
            print(json.dumps(out, indent=2), flush=True)
            return out
        finally:
            shutil.rmtree(area, ignore_errors=True)
            lab_down(root / "lab")
