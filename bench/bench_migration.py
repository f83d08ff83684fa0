"""Live migration through the app against bare `virsh migrate --live --p2p`, the same
guest between the same two lab hosts, idle and while it dirties 64 MiB, alternating
directions: the ratio of total times (goal: the app adds under 10 %) and both downtimes
(libvirt's own figure for the finished job)."""

from __future__ import annotations

import re
import statistics
import subprocess
import time
from typing import Any

from django.contrib.auth import get_user_model

from guests.create import create
from guests.inventory import reconcile_host
from guests.lifecycle import act
from guests.migration.job import migrate_body
from guests.migration.services import request_migration
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget
from hosts.virt import domains as virt
from hosts.virt.console import read_console_until
from lab.bootfiles import lab_boot_files
from lab.daemons import lab_down, lab_up
from lab.register import register_lab_host
from lab.tinyguest import (
    TINY_GUEST_DIRTYING,
    TINY_GUEST_TICK,
    tiny_guest_cmdline,
)
from xenweb.jobs.runner import run_job

ROUNDS = 5
SCENARIOS = {"idle": (128, 0), "dirty_64mib": (4 * 64 + 64, 64)}


def _virsh_migrate(source: Host, target: Host, name: str) -> tuple[float, float | None]:
    began = time.monotonic()
    done = subprocess.run(["virsh", "-c", source.uri, "migrate", "--live", "--p2p",
                           "--persistent", "--undefinesource", "--auto-converge", name,
                           target.uri], capture_output=True, text=True, timeout=600)
    total = time.monotonic() - began
    if done.returncode != 0:
        raise RuntimeError(f"virsh migrate failed: {done.stderr.strip()}")
    info = subprocess.run(["virsh", "-c", target.uri, "domjobinfo", "--completed", name],
                          check=True, capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"Total downtime:\s+(\d+)", info)
    return total, float(found.group(1)) if found else None


def _app_migrate(guest: Guest, target: Host, user: Any) -> tuple[float, float | None]:
    began = time.monotonic()
    job = request_migration(guest, target, user=user)
    run_job(job.pk, migrate_body, task_id=f"bench-{job.pk}", worker="bench")
    job.refresh_from_db()
    if job.state != "succeeded":
        raise RuntimeError(f"the app's migration failed: {job.error}")
    return time.monotonic() - began, job.result.get("downtime_ms")


def _guest_on(host: Host, uuid: str) -> Guest:
    reconcile_host(host)
    return Guest.objects.get(host=host, uuid=uuid)


def _scenario(hosts: list[Host], memory_mib: int, dirty_mib: int, user: Any) -> dict[str, Any]:
    a, b = hosts
    kernel, initrd = lab_boot_files(a)
    lab_boot_files(b)  # the same directory: the kernel is where the target looks for it
    guest = create({"name": f"bench-mig-{int(time.time())}", "host": a.pk, "type": "hvm",
                    "memory_mib": memory_mib, "vcpus": 1, "kernel_file": kernel,
                    "initrd_file": initrd, "cmdline": tiny_guest_cmdline(dirty_mib),
                    "bootloader": "", "boot": ["hd"], "disks": [], "nics": [], "vnc": False,
                    "description": "", "labels": []}, user=user)
    uuid, name = str(guest.uuid), guest.name
    act(guest, "start", user=user)
    ready = TINY_GUEST_DIRTYING if dirty_mib else TINY_GUEST_TICK
    if ready not in read_console_until(VirtTarget(a.uri, allow_insecure=True), uuid, ready, 180):
        raise RuntimeError(f"the tiny guest did not print '{ready}'")
    app, bare = [], []
    here, there = a, b
    try:
        for _ in range(ROUNDS):
            app.append(_app_migrate(_guest_on(here, uuid), there, user))
            here, there = there, here
            bare.append(_virsh_migrate(here, there, name))
            here, there = there, here
            _guest_on(here, uuid)
    finally:
        reconcile_host(there)
        virt.destroy(VirtTarget(here.uri, allow_insecure=True), uuid)
        virt.undefine(VirtTarget(here.uri, allow_insecure=True), uuid)
    return _summary(app, bare)


def _median(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(statistics.median(known), 3) if known else None


def _summary(app: list[tuple[float, float | None]],
             bare: list[tuple[float, float | None]]) -> dict[str, Any]:
    app_total, bare_total = _median([t for t, _ in app]), _median([t for t, _ in bare])
    return {
        "app_total_s": app_total, "virsh_total_s": bare_total,
        "total_ratio": round(app_total / bare_total, 3) if app_total and bare_total else None,
        "app_downtime_ms": _median([d for _, d in app]),
        "virsh_downtime_ms": _median([d for _, d in bare]),
        "rounds": ROUNDS,
    }


def run() -> dict[str, Any]:
    hosts = [register_lab_host(lab_host)[0] for lab_host in lab_up(2)[:2]]
    user, _ = get_user_model().objects.get_or_create(username="bench-migration")
    try:
        results = {name: _scenario(hosts, memory, dirty, user)
                   for name, (memory, dirty) in SCENARIOS.items()}
    finally:
        lab_down()  # the bench leaves nothing running
    for name, row in results.items():
        print(f"  {name}: app {row['app_total_s']} s vs virsh {row['virsh_total_s']} s "
              f"(ratio {row['total_ratio']}); downtime app {row['app_downtime_ms']} ms, "
              f"virsh {row['virsh_downtime_ms']} ms", flush=True)
    return results
