"""V2V import throughput: a 4 GiB disk (one quarter random data, the rest zeros) as a
monolithicSparse VMDK, imported into a lab host's pool by the import job (inspect,
checks, volume, qemu-img under prlimit with progress, guest definition) against a bare
`qemu-img convert -f vmdk -O qcow2` of the same file into the same pool directory, in the
same run, medians of four rounds in alternating order, each run started with the page cache
written back. Goal: job / bare >= 0.9. Then XVA export of a guest with that disk against
`qemu-img convert -O raw` of its volume. Goal: export / bare >= 0.7."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model

from bench.stats import quiet_start
from conversions.v2v.import_job import run_import
from conversions.v2v.services import start_import
from conversions.v2v.sources import import_root
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget, domains
from lab.daemons import lab_down, lab_up
from lab.register import register_lab_host
from storage.inventory import reconcile_pools
from storage.models import Pool
from xenweb.jobs.runner import run_job

SIZE = 4 * 1024**3
MIB = 1024 * 1024
ROUNDS = 4


def _timed(fn: Any) -> float:
    """Seconds `fn` takes, started with no dirty pages of earlier runs being written back
    (the page cache of the 4 GiB writes otherwise slows whichever run comes next)."""
    quiet_start()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _image(raw: Path) -> None:
    """Every fourth MiB random, the rest zeros (holes)."""
    with open(raw, "wb") as out:
        out.truncate(SIZE)
        for index in range(0, SIZE // MIB, 4):
            out.seek(index * MIB)
            out.write(os.urandom(MIB))


def _export_rounds(host: Any, pool: Pool, area: Path, user: Any) -> dict[str, Any]:
    """XVA export of a guest with the same disk (raw volume) against `qemu-img convert
    -O raw` of that volume, medians of ROUNDS alternating rounds. Goal: export / qemu-img
    >= 0.7."""
    from conversions.v2v.export_job import export_file, run_export
    from conversions.v2v.services import start_export

    job = start_import({"source": f"{area.name}/disk.vmdk", "host": host.pk,
                        "pool": pool.pk, "format": "raw",
                        "name": f"bench-x-{uuid.uuid4().hex[:4]}"}, user=user)
    run_job(job.pk, run_import, task_id=f"bench-{job.pk}", worker="bench")
    job.refresh_from_db()
    guest = Guest.objects.get(pk=job.result["guest"])
    volume = job.result["volumes"][0]
    times: dict[str, list[float]] = {"xva": [], "bare": []}
    try:
        xva_bytes = 0

        def bare() -> None:
            out = Path(pool.target_path) / "bench-bare-export.raw"
            times["bare"].append(_timed(lambda: subprocess.run(
                ["qemu-img", "convert", "-f", "raw", "-O", "raw", volume, str(out)],
                check=True)))
            out.unlink()

        def xva() -> None:
            nonlocal xva_bytes
            export = start_export(guest, fmt="xva", user=user)
            times["xva"].append(_timed(lambda: run_job(
                export.pk, run_export, task_id=f"bench-{export.pk}", worker="bench")))
            export.refresh_from_db()
            if export.state != "succeeded":
                raise RuntimeError(f"export failed: {export.error}")
            path = export_file(export)
            xva_bytes = path.stat().st_size if path else 0
            if path:
                path.unlink()

        for rnd in range(ROUNDS):
            for step in ((bare, xva) if rnd % 2 == 0 else (xva, bare)):
                step()
    finally:
        domains.undefine(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
        Path(volume).unlink(missing_ok=True)
    print(f"  export rounds: xva {[round(t, 2) for t in times['xva']]} s, qemu-img "
          f"{[round(t, 2) for t in times['bare']]} s", flush=True)
    xva_s, bare_s = statistics.median(times["xva"]), statistics.median(times["bare"])
    return {"xva_export_seconds": round(xva_s, 2), "bare_raw_seconds": round(bare_s, 2),
            "xva_export_mib_s": round(SIZE / xva_s / MIB, 1), "xva_bytes": xva_bytes,
            "export_ratio": round(bare_s / xva_s, 3), "export_goal_ratio": 0.7}


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="xenweb-bench-v2v-") as tmp:
        root = Path(tmp)
        lab = lab_up(1, root=root / "lab")[0]
        area = import_root() / f"bench-{uuid.uuid4().hex[:6]}"
        area.mkdir()
        try:
            Host.objects.filter(name=lab.name).delete()  # a previous run's lab, gone now
            host, _ = register_lab_host(lab)
            reconcile_pools(host)
            pool = Pool.objects.get(host=host, name="local")
            user, _ = get_user_model().objects.get_or_create(username="bench-v2v")
            raw = root / "disk.raw"
            _image(raw)
            vmdk = area / "disk.vmdk"
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                            "subformat=monolithicSparse", str(raw), str(vmdk)], check=True)
            raw.unlink()
            rounds: dict[str, list[float]] = {"job": [], "bare": []}

            def bare(rnd: int) -> None:
                bare_out = Path(pool.target_path) / f"bench-bare-{rnd}.qcow2"
                rounds["bare"].append(_timed(lambda: subprocess.run(
                    ["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(vmdk),
                     str(bare_out)], check=True)))
                bare_out.unlink()

            def job(rnd: int) -> None:
                job = start_import({"source": f"{area.name}/disk.vmdk", "host": host.pk,
                                    "pool": pool.pk, "format": "qcow2",
                                    "name": f"bench-{rnd}-{uuid.uuid4().hex[:4]}"},
                                   user=user)
                rounds["job"].append(_timed(lambda: run_job(
                    job.pk, run_import, task_id=f"bench-{job.pk}", worker="bench")))
                job.refresh_from_db()
                if job.state != "succeeded":
                    raise RuntimeError(f"import failed: {job.error}")
                guest = Guest.objects.get(pk=job.result["guest"])
                domains.undefine(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
                for path in job.result["volumes"]:
                    Path(path).unlink(missing_ok=True)

            for rnd in range(ROUNDS):  # alternating which goes first
                for step in ((bare, job) if rnd % 2 == 0 else (job, bare)):
                    step(rnd)
            print(f"  import rounds: job {[round(t, 2) for t in rounds['job']]} s, qemu-img "
                  f"{[round(t, 2) for t in rounds['bare']]} s", flush=True)
            export = _export_rounds(host, pool, area, user)
            job_s, bare_s = statistics.median(rounds["job"]), statistics.median(rounds["bare"])
            out = {
                "bytes": SIZE, "data_bytes": SIZE // 4,
                "job_seconds": round(job_s, 2), "bare_qemu_img_seconds": round(bare_s, 2),
                "job_mib_s": round(SIZE / job_s / MIB, 1),
                "bare_mib_s": round(SIZE / bare_s / MIB, 1),
                "ratio": round(bare_s / job_s, 3), "goal_ratio": 0.9,
                "ratio_of_best_rounds": round(min(rounds["bare"]) / min(rounds["job"]), 3),
                **export,
            }
            print(json.dumps(out, indent=2), flush=True)
            return out
        finally:
            shutil.rmtree(area, ignore_errors=True)
            lab_down(root / "lab")
