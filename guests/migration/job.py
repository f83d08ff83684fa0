"""The migration job: preflight again, move the guest, watch and steer the migration,
and leave the inventory saying where the guest runs — on exactly one host.

Convergence (where the driver allows it, as Nova's downtime steps): start with a small
max-downtime target and raise it whenever an iteration ends with no less memory left to
copy than the one before (the guest dirties memory faster than it is copied): at least
doubled, and at once to what copying the remaining memory at the measured bandwidth takes
(with a margin), up to a ceiling; QEMU's auto-converge throttles the guest after that.
The statistics are read beside the job (guests.migration.watch). A migration that has not
finished after a time proportional to the guest's memory is aborted and the guest keeps
running on the source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from guests.attachments import migration_save
from guests.errors import GuestError
from guests.migration.preflight import LIVE_STATES, MigrationOptions, preflight, shared_directory
from guests.migration.watch import StatsWatch
from guests.models import Guest
from guests.save_images import SaveImageRefused, checked_image
from hosts.models import Host
from hosts.virt import VirtError, VirtObjectNotFound, VirtTarget
from hosts.virt import domains as virt
from hosts.virt import migration as vm
from hosts.virt.pools import delete_volume_by_path
from hosts.virt.volumes import describe_pool
from xenweb.jobs.errors import JobCancelled, JobError
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.selectors import require_target

POLL_SECONDS = 0.1  # iterations of a small guest take tens of milliseconds
CANCEL_CHECK_SECONDS = 0.5
# How often the statistics are read: each read waits for the domain's lock in libvirtd, and
# at 0.1 s they slowed the migration itself (total 1.005-1.09 of virsh's; at 0.5 s
# 0.995-1.011, and the downtime lower than virsh's in every run).
STATS_INTERVAL = 0.5
MIB = 1024 * 1024


@dataclass
class DowntimePolicy:
    """Raises the max-downtime target stepwise while the migration does not converge."""

    initial_ms: int = 30
    ceiling_ms: int = 500
    current_ms: int = 0
    _iteration: int = 0
    _remaining: int | None = None
    steps: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.current_ms = self.initial_ms

    def next_target(self, stats: vm.JobStats) -> int | None:
        """A new downtime target when this sample shows no convergence, else None."""
        if stats.iteration is None or stats.iteration <= self._iteration:
            return None
        before, self._iteration = self._remaining, stats.iteration
        self._remaining = stats.data_remaining
        not_converging = (before is not None and stats.data_remaining is not None
                          and stats.data_remaining >= before)
        if not_converging and self.current_ms < self.ceiling_ms:
            wanted = max(self.current_ms * 2, self._needed_ms(stats))
            self.current_ms = min(self.ceiling_ms, wanted)
            self.steps.append(self.current_ms)
            return self.current_ms
        return None

    @staticmethod
    def _needed_ms(stats: vm.JobStats) -> int:
        """What stopping the guest now would take: the memory left at the measured
        bandwidth, with a quarter more for what it dirties meanwhile (0 when unknown)."""
        if not stats.memory_bps or stats.data_remaining is None:
            return 0
        return int(stats.data_remaining * 1000 * 1.25 / stats.memory_bps) + 1


def completion_timeout(memory_mib: int) -> float:
    """Seconds a live migration may take before it is aborted (per GiB, with a floor)."""
    per_gib = settings.MIGRATION_SECONDS_PER_GIB
    return max(settings.MIGRATION_MIN_TIMEOUT, per_gib * memory_mib / 1024)


def _load(job: Job) -> tuple[Guest, Host, MigrationOptions, dict[str, Any]]:
    guest = require_target(job, Guest.objects.select_related("host"),
                           gone="The guest no longer exists.")
    target = Host.objects.filter(pk=job.params.get("target")).first()
    if target is None:
        raise JobError("The target host no longer exists.")
    options = MigrationOptions(mode=job.params.get("mode", "live"),
                               block_copy=bool(job.params.get("block_copy")))
    return guest, target, options, job.params


def migrate_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    guest, target, options, params = _load(job)
    source = guest.host
    checks = preflight(guest, target, options, skip=("other jobs",))
    if not checks.ok:
        raise JobError("The migration was not started: " + checks.summary())
    reporter.log(f"Preflight passed: {source} → {target} ({options.mode})")
    started = time.monotonic()
    try:
        if options.mode == "cold":
            outcome = _cold(guest, target, reporter)
        elif options.mode == "offline":
            outcome = _offline(guest, target, reporter)
        else:
            outcome = _live(guest, target, options, params, reporter)
    finally:
        try:
            settle(guest, source, target)
        except GuestError as exc:  # the inventory round settles it later
            reporter.log(f"The inventory could not be updated now: {exc}")
    outcome["total_s"] = round(time.monotonic() - started, 3)
    outcome.update(guest=guest.pk, source=source.pk, target=target.pk, mode=options.mode)
    return outcome


def _request(source: Host, target: Host, options: MigrationOptions, params: dict[str, Any],
             features: vm.MigrationFeatures) -> vm.MigrationRequest:
    return vm.MigrationRequest(
        # libvirt's Xen driver has no UNSAFE flag (it does not check the storage either).
        unsafe=source.files_local and target.files_local and not options.block_copy
        and source.hypervisor_type == "QEMU",
        target_uri=target.migration_uri or target.uri,
        live=options.mode == "live",
        bandwidth_mib=params.get("bandwidth_mib") if features.bandwidth else None,
        auto_converge=bool(params.get("auto_converge", True)) and features.auto_converge,
        postcopy=bool(params.get("postcopy")) and features.postcopy,
        block_copy=options.block_copy,
        offline=options.mode == "cold",
    )


class _Migration(threading.Thread):
    """``virDomainMigrateToURI3`` blocks until the end: it runs here while the job watches."""

    def __init__(self, guest: Guest, request: vm.MigrationRequest) -> None:
        super().__init__(name=f"migrate-{guest.pk}", daemon=True)
        self.guest, self.request = guest, request
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            vm.migrate(self.guest.host.virt_target, str(self.guest.uuid), self.request)
        except Exception as exc:  # reported by the job, which owns the outcome
            self.error = exc


def _live(guest: Guest, target: Host, options: MigrationOptions, params: dict[str, Any],
          reporter: ProgressReporter) -> dict[str, Any]:
    source = guest.host
    features = vm.features_for(source.hypervisor_type)
    reporter.configure(cancellable=features.abort, estimated=not features.data_counters)
    if not features.abort:
        reporter.log(f"{source.hypervisor_type}'s driver cannot abort a migration: "
                     "it cannot be cancelled once started.")
    total = guest.memory_mib * MIB
    reporter.update(0, total=total, unit=Job.Unit.BYTES, force=True,
                    message=f"Migrating '{guest}' to {target}")
    policy = DowntimePolicy(initial_ms=int(params.get("max_downtime_ms") or 30))
    timeout = completion_timeout(guest.memory_mib)
    migration = _Migration(guest, _request(source, target, options, params, features))
    origin, uuid = source.virt_target, str(guest.uuid)
    before_ms = _preset_downtime(policy, origin, uuid) if features.max_downtime else None
    preset = before_ms is not None
    watch = StatsWatch(origin, uuid, interval=STATS_INTERVAL,
                       steer=_steering(policy, origin, uuid, preset=preset)
                       if features.max_downtime else lambda stats: None)
    migration.start()
    if features.data_counters:
        watch.start()
    began = checked = time.monotonic()
    logged_steps = 0
    try:
        while migration.is_alive():
            migration.join(POLL_SECONDS)
            if not migration.is_alive():
                break
            if features.data_counters:
                stats = watch.take()
                for step in policy.steps[logged_steps:]:
                    reporter.log(f"Not converging: max downtime raised to {step} ms")
                logged_steps = len(policy.steps)
                if stats is not None:
                    _report(reporter, stats, total)
                    checked = time.monotonic()
                elif time.monotonic() - checked >= CANCEL_CHECK_SECONDS:
                    reporter.check_cancelled()  # no sample came: the watch waits on libvirt
                    checked = time.monotonic()
            else:
                _estimate(reporter, time.monotonic() - began, total)
            if time.monotonic() - began > timeout:
                if not features.abort:
                    continue
                reporter.log(f"No completion after {timeout:.0f} s: aborting")
                _abort(migration, origin, uuid)
                _restore_downtime(before_ms, origin, uuid)
                raise JobError(f"The migration did not complete within {timeout:.0f} s and was "
                               f"aborted; '{guest}' keeps running on {source}.")
    except JobCancelled:
        if features.abort and migration.is_alive():
            _abort(migration, origin, uuid)
        migration.join()
        if migration.error is None:
            raise JobError("The migration had already completed when the cancel arrived: "
                           f"'{guest}' now runs on {target}.") from None
        _restore_downtime(before_ms, origin, uuid)
        raise
    finally:
        watch.stop()
    last = watch.last
    if migration.error is not None:
        _restore_downtime(before_ms, origin, uuid)
        where = _where(source, uuid)
        still = (f" '{guest}' is still {where} on {source}." if where in LIVE_STATES else "")
        raise JobError(f"The migration failed: {str(migration.error).rstrip('.')}.{still}"
                       f"{_hint(source, options)}") from migration.error
    done = vm.job_stats(target.virt_target, uuid, completed=True)
    moved = (done.data_processed if done and done.data_processed else
             last.data_processed if last and last.data_processed else None)
    return {
        "downtime_ms": done.downtime_ms if done else None,
        "downtime_note": "" if done and done.downtime_ms is not None else
        f"{source.hypervisor_type}'s driver does not report the downtime.",
        "bytes": moved,
        "downtime_steps_ms": policy.steps,
    }


def _preset_downtime(policy: DowntimePolicy, origin: VirtTarget, uuid: str) -> int | None:
    """Set the first downtime target before the migration starts (libvirt keeps it for
    the next migration of the domain); the limit it replaces, None where the driver only
    takes one during a migration. Set with the first sample of the running migration
    instead, it came too late for a small guest, whose first pass could end with
    QEMU's default limit (300 ms) still in place."""
    try:
        before = vm.max_downtime(origin, uuid)
        vm.set_max_downtime(origin, uuid, policy.current_ms)
    except VirtError:
        return None
    return before


def _restore_downtime(before_ms: int | None, origin: VirtTarget, uuid: str) -> None:
    """The guest stays on the source: its downtime limit as it was before the job."""
    if before_ms is not None:
        _try(vm.set_max_downtime, origin, uuid, before_ms)


def _steering(policy: DowntimePolicy, origin: VirtTarget, uuid: str, *,
              preset: bool = False) -> Callable[[vm.JobStats], None]:
    """What the stats watch does with each sample: set the first downtime target once the
    migration runs (unless `preset` before it), then raise it as the policy says."""
    started = preset

    def steer(stats: vm.JobStats) -> None:
        nonlocal started
        if not started:
            _try(vm.set_max_downtime, origin, uuid, policy.current_ms)
            started = True
        step = policy.next_target(stats)
        if step is not None:
            _try(vm.set_max_downtime, origin, uuid, step)

    return steer


def _hint(source: Host, options: MigrationOptions) -> str:
    if source.hypervisor_type == "Xen" and options.mode == "live":
        # Seen on Debian 12's Xen 4.17 (built without CONFIG_SHADOW_PAGING): "Failed to
        # enable logdirty" in libxl's log, a generic error through libvirt.
        return (" On Xen this happens when the hypervisor cannot track the guest's dirty "
                "memory (PV guests need shadow paging, which some Xen builds such as "
                "Debian 12's leave out): migrate it paused instead.")
    return ""


def _try(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except VirtError:
        pass  # the migration may just have finished: nothing left to steer


def _abort(migration: _Migration, origin: VirtTarget, uuid: str) -> None:
    _try(vm.abort, origin, uuid)
    migration.join(60)


def _report(reporter: ProgressReporter, stats: vm.JobStats, memory: int) -> None:
    total = stats.data_total or memory
    done = stats.data_processed or 0
    rate = f", dirtying {stats.dirty_rate_bps / MIB:.1f} MiB/s" if stats.dirty_rate_bps else ""
    reporter.update(min(done, total), total=max(total, done),
                    message=f"Copying memory (iteration {stats.iteration or 1}{rate})")


def _estimate(reporter: ProgressReporter, elapsed: float, memory: int) -> None:
    """No counters (Xen): an estimate from the elapsed time at a nominal bandwidth."""
    nominal = settings.MIGRATION_ESTIMATED_BPS
    reporter.update(min(int(elapsed * nominal), int(memory * 0.99)), total=memory,
                    message=f"Migrating ({elapsed:.0f} s elapsed; progress is an estimate)")


def _cold(guest: Guest, target: Host, reporter: ProgressReporter) -> dict[str, Any]:
    reporter.update(0, total=1, message=f"Moving the definition of '{guest}' to {target}",
                    force=True)
    source, uuid = guest.host, str(guest.uuid)
    features = vm.features_for(source.hypervisor_type)
    try:
        if features.offline:
            request = _request(source, target, MigrationOptions(mode="cold"), {}, features)
            vm.migrate(source.virt_target, uuid, request)
        else:
            # libvirt's Xen driver has no offline migration: the app moves the definition.
            xml = vm.export_definition(source.virt_target, uuid)
            vm.define_from_xml(target.virt_target, xml)
            try:
                virt.undefine(source.virt_target, uuid)
            except VirtError:
                _forget(target, uuid)
                raise
    except VirtError as exc:
        raise JobError(f"The cold migration failed: {exc}") from exc
    return {"downtime_ms": None, "downtime_note": "The guest was shut off.", "bytes": 0}


def _offline(guest: Guest, target: Host, reporter: ProgressReporter) -> dict[str, Any]:
    """Save the memory to a file on storage both hosts share, restore it on the target.

    The target gets the definition first (restore then keeps it persistent); when the
    restore fails the guest is restored on the source again and the target forgets it.
    """
    path = shared_save_path(guest, target)
    with migration_save(guest, path):
        return _save_and_restore(guest, target, path, reporter)


def _save_and_restore(guest: Guest, target: Host, path: str,
                      reporter: ProgressReporter) -> dict[str, Any]:
    source, uuid = guest.host, str(guest.uuid)
    xml = vm.export_definition(source.virt_target, uuid)
    steps = 4
    reporter.update(0, total=steps, unit=Job.Unit.STEPS, force=True,
                    message=f"Defining '{guest}' on {target}")
    vm.define_from_xml(target.virt_target, xml)
    reporter.update(1, message=f"Saving the memory of '{guest}' to {path}", force=True)
    began = time.monotonic()
    try:
        saved_xml = virt.save(source.virt_target, uuid, path)
    except VirtError as exc:
        _forget(target, uuid)
        raise JobError(f"Saving '{guest}' failed: {exc}; it keeps running on {source}.") from exc
    reporter.update(2, message=f"Restoring '{guest}' on {target}", force=True)
    try:
        _restore_checked(guest, target, path, saved_xml)
    except SaveImageRefused as exc:
        _forget(target, uuid)
        raise JobError(f"{exc} The image on shared storage changed after the save: "
                       f"'{guest}' was restored nowhere and is shut off on {source}; the "
                       f"image is kept for inspection.") from exc
    except (VirtError, GuestError) as exc:
        _forget(target, uuid)
        try:
            _restore_checked(guest, source, path, saved_xml)
        except (VirtError, GuestError) as again:
            raise JobError(f"Restoring on {target} failed: {exc}; restoring on {source} "
                           f"failed too: {again}") from again
        _delete_file(source, path)
        raise JobError(f"Restoring on {target} failed: {exc}; '{guest}' was restored on "
                       f"{source}.") from exc
    downtime_ms = int((time.monotonic() - began) * 1000)
    reporter.update(3, message=f"Removing '{guest}' from {source}", force=True)
    virt.undefine(source.virt_target, uuid)
    _delete_file(target, path)
    return {"downtime_ms": downtime_ms,
            "downtime_note": "From the start of the save to the end of the restore.",
            "bytes": None, "save_path": path}


def _restore_checked(guest: Guest, host: Host, path: str, saved_xml: str) -> None:
    """Restore the offline migration's save image on `host` once the app has read its
    domain XML and found it to be the one the save ran with (the file lies on storage other
    hosts write; see guests.save_images); QEMU restores with that checked XML."""
    _refresh_pools_holding(host, path)  # libvirt's save wrote it: no pool lists it yet
    checked = checked_image(host.virt_target, path, uuid=str(guest.uuid),
                            label=f"The save image {path}", expected=lambda: saved_xml,
                            guest_label=str(guest))
    virt.restore(host.virt_target, path, dxml=checked if host.hypervisor_type == "QEMU" else None)


def shared_save_path(guest: Guest, target: Host) -> str:
    directory = shared_directory(guest.host, target)
    if directory is None:
        raise JobError(f"{guest.host} and {target} share no file storage for the saved "
                       "memory: offline migration needs an NFS (or other shared) directory "
                       "pool on both.")
    return f"{directory}/.xenweb-save-{guest.uuid}.save"


def _forget(host: Host, uuid: str) -> None:
    try:
        virt.undefine(host.virt_target, uuid)
    except VirtError:
        pass


def _refresh_pools_holding(host: Host, path: str) -> None:
    from storage.models import Pool

    for pool in Pool.objects.filter(host=host, shared=True, active=True):
        if pool.target_path and path.startswith(pool.target_path.rstrip("/") + "/"):
            try:
                describe_pool(host.virt_target, pool.name, refresh=True)
            except VirtError:
                continue


def _delete_file(host: Host, path: str) -> None:
    """The save file, through the host's pool (refreshed first: it was written by libvirt's
    save, not created as a volume)."""
    from storage.models import Pool

    for pool in Pool.objects.filter(host=host, shared=True, active=True):
        try:
            describe_pool(host.virt_target, pool.name, refresh=True)
            delete_volume_by_path(host.virt_target, path)
            return
        except VirtError:
            continue


def _where(host: Host, uuid: str) -> str | None:
    """The guest's state on ``host``, None when the host does not know it."""
    try:
        return virt.get_domain(host.virt_target, uuid).state
    except VirtObjectNotFound:
        return None


def settle(guest: Guest, source: Host, target: Host) -> Guest:
    """Point the guest's row at the host that has it (the target wins once it runs there)
    and refresh it; the watcher leaves guests alone while their migration job runs."""
    from guests.inventory import cached_fields

    uuid = str(guest.uuid)
    try:
        on_source = _where(source, uuid)
    except VirtError as exc:
        raise GuestError(f"Where '{guest}' runs could not be read from {source}: {exc}") from exc
    if on_source is not None and on_source != "paused":
        host = source  # running (or shut off) on the source: the migration did not happen
    else:
        try:
            on_target = _where(target, uuid)
        except VirtError:
            on_target = None  # the target cannot answer: the source's word stands
        host = target if on_target is not None and on_source is None else source
        if on_source is None and on_target is None:
            return guest  # neither host answers for it: the inventory round decides
    info = virt.get_domain(host.virt_target, uuid)
    with transaction.atomic():
        Guest.objects.filter(host=host, uuid=guest.uuid).exclude(pk=guest.pk).delete()
        guest.host = host
        if info is not None:
            for key, value in cached_fields(info).items():
                setattr(guest, key, value)
        guest.save()
    return guest
