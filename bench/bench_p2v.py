"""P2V copy speed: a P2V job (reader over SSH, sparse upload, verify) against a bare
``ssh root@src dd if=DISK | dd of=FILE`` of the same loop-device disk into the same lab
pool directory, in the same run (medians of four rounds in alternating order: on this shared
machine a single lucky round of either side moved a best-of ratio by a tenth; the source disk
read once before so that both read it from the page cache, each run started with the
page cache written back). Goals: full disk P2V/dd >= 0.9 (copy phase), a
10%-used disk >= 3x faster than dd. ``P2V_BENCH_MIB`` sets the disk size (default 2048)."""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model

from bench.stats import quiet_start
from hosts.models import Host
from lab.daemons import lab_down, lab_up
from lab.register import register_lab_host
from storage.inventory import reconcile_pools
from storage.models import Pool
from storage.p2v import job as p2v_job
from storage.p2v.address import checked
from storage.p2v.ssh import Source, confirm_host_key, ssh_args
from tests.storage.p2v_source import MIB, LoopDisk, SshServer, detach, make_source_network
from xenweb.appliance.sshkeys import P2V_IDENTITY, P2V_TRUST
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

ROUNDS = 4


def _disk(path: Path, size: int, used: float) -> LoopDisk:
    with open(path, "wb") as out:
        out.truncate(size)
        for _ in range(int(size * used) // MIB):
            out.write(os.urandom(MIB))
    device = subprocess.run(["/usr/sbin/losetup", "-f", "--show", "-r", str(path)],
                            check=True, capture_output=True, text=True).stdout.strip()
    return LoopDisk(image=path, device=device, size=size)


def _dd(source: Source, device: str, target: Path) -> float:
    started = time.perf_counter()
    reader = subprocess.Popen(ssh_args(source, ["dd", f"if={device}", "bs=4M"]),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    subprocess.run(["dd", f"of={target}", "bs=4M"], stdin=reader.stdout, check=True,
                   capture_output=True)
    reader.wait()
    return time.perf_counter() - started


def _p2v(source: Source, fingerprint: str, pool: Pool, device: str, user: Any) -> \
        tuple[float, dict[str, Any]]:
    request = p2v_job.Request(source=source, fingerprint=fingerprint, disks=[device],
                              host=pool.host, pool=pool, name=f"bench-{uuid.uuid4().hex[:6]}")
    job = p2v_job.start_p2v(request, user=user, enqueue=False)
    started = time.perf_counter()
    run_job(job.pk, p2v_job.p2v_body, task_id=job.celery_task_id, worker="bench")
    elapsed = time.perf_counter() - started
    job = Job.objects.get(pk=job.pk)
    if job.state != "succeeded":
        raise RuntimeError(f"P2V job failed: {job.error}")
    return elapsed, job.result["disks"][0]


def _rounds(source: Source, fingerprint: str, pool: Pool, disk: LoopDisk, user: Any,
            label: str) -> tuple[float, float, float, int, float]:
    """The median dd time, P2V copy time and whole-job time of ROUNDS rounds, the bytes P2V
    sent and the ratio of the best rounds. Both sides read the source disk from a warm
    cache, in alternating order."""
    subprocess.run(["dd", f"if={disk.device}", "of=/dev/null", "bs=4M"], check=True,
                   capture_output=True)
    baselines, copies, wholes, sent = [], [], [], 0
    for rnd in range(ROUNDS):
        for side in (("dd", "p2v") if rnd % 2 == 0 else ("p2v", "dd")):
            quiet_start()
            if side == "dd":
                target = Path(pool.target_path) / f"dd-{label}.img"
                baselines.append(_dd(source, disk.device, target))
                target.unlink()
            else:
                whole, copied = _p2v(source, fingerprint, pool, disk.device, user)
                wholes.append(whole)
                copies.append(copied["seconds"])
                sent = copied["bytes_sent"]
    print(f"  {label} rounds: dd {[round(b, 2) for b in baselines]} s, P2V copy {copies} s",
          flush=True)
    return (statistics.median(baselines), statistics.median(copies), statistics.median(wholes),
            sent, min(baselines) / min(copies))


def run() -> dict[str, Any]:
    size = int(os.environ.get("P2V_BENCH_MIB", "2048")) * MIB
    with tempfile.TemporaryDirectory(prefix="xenweb-bench-p2v-") as tmp:
        root = Path(tmp)
        lab = lab_up(1, root=root / "lab")[0]
        # P2V refuses the appliance's own addresses: the source sits in a network
        # namespace, as in the lab tests.
        network_context = make_source_network(index=7)
        network = network_context.__enter__()
        server = SshServer(root=root, authorized_key=P2V_IDENTITY.public_key(),
                           network=network)
        disks: list[LoopDisk] = []
        try:
            Host.objects.filter(name=lab.name).delete()  # from an earlier run's lab
            host, _ = register_lab_host(lab)
            reconcile_pools(host)
            pool = Pool.objects.get(host=host, name="local")
            user, _ = get_user_model().objects.get_or_create(username="bench-p2v")
            server.start()
            source = checked(Source(server.address, server.port, "root"))
            fingerprint = confirm_host_key(source, None)
            out: dict[str, Any] = {"bytes": size, "goal_full_ratio": 0.9,
                                   "goal_sparse_speedup": 3.0}
            for label, used in (("full", 1.0), ("sparse", 0.1)):
                disk = _disk(root / f"{label}.img", size, used)
                disks.append(disk)
                baseline, copy_s, whole_s, sent, best = _rounds(source, fingerprint, pool,
                                                                disk, user, label)
                out[f"{label}_dd_s"] = round(baseline, 2)
                out[f"{label}_p2v_copy_s"] = round(copy_s, 2)
                out[f"{label}_p2v_job_s"] = round(whole_s, 2)
                out[f"{label}_bytes_sent"] = sent
                out[f"{label}_ratio"] = round(baseline / copy_s, 3)
                out[f"{label}_ratio_with_verify"] = round(baseline / whole_s, 3)
                out[f"{label}_ratio_of_best_rounds"] = round(best, 3)
                print(f"  {label}: dd {baseline:.2f} s, P2V copy {copy_s:.2f} s (ratio "
                      f"{out[f'{label}_ratio']}), whole job {whole_s:.2f} s", flush=True)
            return out
        finally:
            server.stop()
            P2V_TRUST.unpin(server.address, server.port)
            network_context.__exit__(None, None, None)
            for disk in disks:
                detach(disk)
            lab_down(root=root / "lab")
