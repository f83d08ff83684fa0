"""Migration preflight: every reason a guest cannot move to a host, in plain words,
checked before anything moves (and again by the job, since time passes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from guests.models import Guest
from guests.placement.automatic import HEADROOM_MIB, free_memory_mib
from guests.placement.conflicts import placement_conflicts
from guests.placement.exclusivity import conflicts
from hosts.guest_networks import guest_networks
from hosts.models import Host
from hosts.virt import VirtError, parse_uri
from hosts.virt import migration as vm
from hosts.virt.snapshots import SnapshotsUnsupported, list_snapshots
from storage.models import Pool
from storage.sharing import disk_on_target, shared_pool_on

LIVE_STATES = ("running", "blocked", "paused")
AUTHENTICATED_TRANSPORTS = ("ssh", "tls", "libssh", "libssh2")
# libvirt networks whose segment ends at the host (NAT, routed, isolated).
HOST_LOCAL_MODES = ("", "nat", "route", "open")


@dataclass(frozen=True)
class MigrationOptions:
    # live | paused (peer to peer, the guest paused during the copy: no dirty-memory
    # tracking) | offline (save/restore via shared storage) | cold
    mode: str = "live"
    block_copy: bool = False

    @property
    def moves_memory(self) -> bool:
        return self.mode in ("live", "paused", "offline")


@dataclass(frozen=True)
class Check:
    check: str
    ok: bool
    message: str


@dataclass(frozen=True)
class Preflight:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def summary(self) -> str:
        return " ".join(f"{check.message}" for check in self.failures())

    def as_list(self) -> list[dict[str, Any]]:
        return [asdict(check) for check in self.checks]


CheckFn = Callable[[Guest, Host, MigrationOptions], Check]


def _check(name: str, problems: list[str], fine: str) -> Check:
    return Check(name, not problems, " ".join(problems) if problems else fine)


def check_guest_state(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    problems = []
    if guest.is_privileged:
        problems.append("Domain-0 is the host's management domain: it never migrates.")
    elif options.mode == "cold" and guest.state not in ("shutoff", "crashed"):
        problems.append(f"'{guest}' is {guest.get_state_display()}: cold migration moves "
                        "shut-off guests only (use live or offline migration).")
    elif options.moves_memory and guest.state not in LIVE_STATES:
        problems.append(f"'{guest}' is {guest.get_state_display()}: only a running or paused "
                        "guest can be migrated live or offline (use cold migration).")
    return _check("guest state", problems, f"'{guest}' is {guest.get_state_display()}.")


def check_target(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    problems = []
    if target.pk == guest.host_id:
        problems.append(f"'{guest}' already runs on {target}.")
    elif target.state == Host.State.MAINTENANCE:
        problems.append(f"{target} is in maintenance mode.")
    elif target.state != Host.State.ONLINE:
        problems.append(f"{target} is {target.get_state_display()}, not online.")
    if not target.accepts_migrations:
        problems.append(f"{target} is not on this appliance's migration allow-list.")
    return _check("target host", problems, f"{target} is online and accepts migrations.")


def _transport(uri: str) -> str:
    return parse_uri(uri).transport or "local"


def check_transport(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    uri = target.migration_uri or target.uri
    transport = _transport(uri)
    if transport in AUTHENTICATED_TRANSPORTS:
        return Check("authenticated transport", True,
                     f"The source reaches {target} over {transport} (authenticated).")
    if target.allow_insecure_transport and guest.host.allow_insecure_transport:
        return Check("authenticated transport", True,
                     f"Both hosts are allowed an insecure transport ({transport}).")
    if transport == "local" and target.pk == guest.host_id:
        return Check("authenticated transport", True, "Same host.")
    return Check("authenticated transport", False,
                 f"{target} is reached over '{transport}', which does not authenticate the "
                 "peer: enrol it over ssh or tls to migrate to it.")


def check_hypervisor(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    source = guest.host
    if source.hypervisor_type != target.hypervisor_type:
        return Check("hypervisor", False,
                     f"{source} runs {source.hypervisor_type or 'an unknown hypervisor'}, "
                     f"{target} runs {target.hypervisor_type or 'an unknown one'}: a guest "
                     "moves only between hosts of the same hypervisor.")
    features = vm.features_for(target.hypervisor_type)
    if not features.supported:
        return Check("hypervisor", False, f"libvirt's {target.hypervisor_type or 'unknown'} "
                     "driver cannot migrate guests.")
    if options.block_copy and not features.block_copy:
        return Check("hypervisor", False,
                     f"{target.hypervisor_type}'s libvirt driver cannot copy disks while "
                     "migrating: put the disks on shared storage.")
    return Check("hypervisor", True, f"Both hosts run {target.hypervisor_type}.")


def _guest_caps(host: Host, os_type: str) -> list[dict[str, Any]]:
    return [cap for cap in host.capabilities.get("guests", []) if cap.get("os_type") == os_type]


def check_cpu(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    source = guest.host
    problems = []
    if source.arch and target.arch and source.arch != target.arch:
        problems.append(f"{source} is {source.arch}, {target} is {target.arch}.")
    source_caps = _guest_caps(source, guest.os_type)
    target_caps = _guest_caps(target, guest.os_type)
    if source_caps and not target_caps:
        problems.append(f"{target} cannot run {guest.type_label} guests.")
    elif source_caps and target_caps:
        source_words = {cap.get("wordsize") for cap in source_caps}
        target_words = {cap.get("wordsize") for cap in target_caps}
        if not source_words & target_words:
            problems.append(f"{target} offers word sizes {sorted(target_words)}, "
                            f"{source} {sorted(source_words)}.")
        if any(cap.get("pae") for cap in source_caps) and not any(
                cap.get("pae") for cap in target_caps):
            problems.append(f"{source} offers PAE and {target} does not (memory model).")
    if not problems and options.moves_memory:
        problems += _cpu_model_problems(guest, target)
    return _check("CPU", problems, f"{target}'s CPU can run '{guest}' "
                  f"({target.arch or 'same architecture'}).")


def _cpu_model_problems(guest: Guest, target: Host) -> list[str]:
    try:
        cpu = vm.guest_cpu(guest.host.virt_target, str(guest.uuid))
        if cpu is None:
            return []
        compatible = vm.compare_cpu(target.virt_target, cpu)
    except VirtError as exc:
        return [f"The CPU comparison failed: {exc}"]
    if compatible is False:
        return [f"{target}'s CPU lacks the model or features '{guest}' runs with."]
    return []


def check_networks(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    nics = (guest.devices or {}).get("nics", [])
    if not nics:
        return Check("networks", True, f"'{guest}' has no network interfaces.")
    try:
        offered = guest_networks(target)
    except VirtError as exc:
        return Check("networks", False, f"The networks of {target} cannot be read: {exc}")
    networks = {net.name: net for net in offered.networks}
    bridges = offered.known_bridges()
    problems = []
    for nic in nics:
        kind, source, mac = nic.get("kind"), nic.get("source"), nic.get("mac")
        if kind == "network":
            net = networks.get(source)
            if net is None or not net.active:
                problems.append(f"NIC {mac}: network '{source}' does not exist or is not "
                                f"active on {target}.")
            elif net.forward_mode in HOST_LOCAL_MODES:
                problems.append(
                    f"NIC {mac}: network '{source}' is {net.forward_mode or 'isolated'} and "
                    f"local to each host; on {target} the guest would be on another layer-2 "
                    "segment (it keeps its MAC; migration across routers is not possible).")
        elif kind == "bridge" and source not in bridges:
            problems.append(f"NIC {mac}: bridge '{source}' is not known on {target}.")
    return _check("networks", problems,
                  f"Every NIC's network exists on {target} on the same layer-2 segment.")


def disk_problem(source: Host, target: Host, path: str) -> str | None:
    """Why the target cannot use the source's disk as it is, or None: the disk's pool must
    be storage the target shares, mounted at the same path (libvirt keeps disk paths)."""
    found = disk_on_target(source, path, target)
    if found is None:
        return f"is not on storage {target} shares"
    if found.path != path:
        return (f"is at {found.path} on {target} (the shared pool is mounted elsewhere): "
                "mount it at the same path on both hosts")
    return None


FILE_POOL_TYPES = ("dir", "fs", "netfs")


def shared_directory(source: Host, target: Host) -> str | None:
    """A directory both hosts mount at the same path (a shared file pool), where offline
    migration puts the saved memory."""
    for pool in Pool.objects.filter(host=source, shared=True, active=True,
                                    pool_type__in=FILE_POOL_TYPES).exclude(target_path=""):
        there = shared_pool_on(pool, target)
        if there is not None and there.active and there.target_path == pool.target_path:
            return pool.target_path
    return None


def check_storage(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    disks = [disk for disk in (guest.devices or {}).get("disks", []) if disk.get("source")]
    if options.mode == "offline" and shared_directory(guest.host, target) is None:
        return Check("storage", False,
                     f"{guest.host} and {target} share no directory for the saved memory: "
                     "offline migration needs a shared (NFS) directory pool on both.")
    if options.block_copy:
        return Check("storage", True, "Whole disks will be copied to the target (block copy): "
                     "this takes long for big disks.")
    problems = []
    for disk in disks:
        problem = disk_problem(guest.host, target, disk["source"])
        if problem:
            problems.append(f"Disk {disk.get('target')} ({disk['source']}) {problem}.")
    if problems:
        problems.append("Move the disks to a shared pool or choose block copy.")
    return _check("storage", problems,
                  f"Every disk is on storage {target} can write." if disks
                  else f"'{guest}' has no disks.")


def check_memory(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    if options.mode == "cold":
        return Check("memory", True, "A cold migration needs no memory on the target now.")
    free = free_memory_mib(target)
    needed = guest.memory_mib + HEADROOM_MIB
    if free < needed:
        return Check("memory", False,
                     f"{target} has {free} MiB free; '{guest}' needs {guest.memory_mib} MiB "
                     f"plus {HEADROOM_MIB} MiB headroom.")
    return Check("memory", True, f"{target} has {free} MiB free for {guest.memory_mib} MiB.")


def check_placement(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    if options.mode == "cold":
        return Check("placement rules", True, "Checked when the guest starts.")
    return _check("placement rules", placement_conflicts(guest, target),
                  "No conflict set forbids the target.")


def check_exclusive_disks(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    if options.mode == "cold":
        return Check("exclusive disks", True, "Checked when the guest starts.")
    return _check("exclusive disks", [c.message for c in conflicts(guest, target)],
                  "No running guest on the target writes the same non-shareable volume.")


def check_snapshots(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    """libvirt refuses to move a guest with snapshots to another host ("cannot migrate domain
    with N snapshots"): their metadata belongs to the source host."""
    try:
        names = [s.name for s in list_snapshots(guest.host.virt_target, str(guest.uuid))]
    except SnapshotsUnsupported:
        return Check("snapshots", True, f"{guest.host} keeps no guest snapshots.")
    except VirtError as exc:
        return Check("snapshots", False, f"The snapshots of '{guest}' cannot be listed: {exc}")
    if names:
        shown = ", ".join(f"'{name}'" for name in names[:5]) + (" …" if len(names) > 5 else "")
        return Check("snapshots", False,
                     f"'{guest}' has {len(names)} snapshot{'s' if len(names) > 1 else ''} "
                     f"({shown}): libvirt moves no guest with snapshots to another host. "
                     "Delete them first (or keep the guest here).")
    return Check("snapshots", True, f"'{guest}' has no snapshots.")


def check_busy(guest: Guest, target: Host, options: MigrationOptions) -> Check:
    from guests.services import busy_job

    job = busy_job(guest)
    if job is not None:
        return Check("other jobs", False,
                     f"'{guest}' is busy with job #{job.pk} ({job.title}).")
    return Check("other jobs", True, "No other job runs on this guest.")


CHECKS: tuple[CheckFn, ...] = (
    check_guest_state, check_target, check_transport, check_hypervisor, check_cpu,
    check_networks, check_storage, check_memory, check_placement, check_exclusive_disks,
    check_snapshots, check_busy,
)


def preflight(guest: Guest, target: Host, options: MigrationOptions | None = None,
              *, skip: tuple[str, ...] = ()) -> Preflight:
    options = options or MigrationOptions()
    checks = tuple(fn(guest, target, options) for fn in CHECKS)
    return Preflight(tuple(check for check in checks if check.check not in skip))


# The checks that need no call to either host: a host failing one can never be the target
# now, whatever the options (the migration dialog greys it out with the reason).
STATIC_CHECKS: tuple[CheckFn, ...] = (
    check_target, check_transport, check_hypervisor)


def target_choices(guest: Guest) -> list[tuple[Host, str]]:
    """Every other host with why it cannot take the guest ("" when it may: the full
    preflight then says more)."""
    options = MigrationOptions(mode="live" if guest.state in LIVE_STATES else "cold")
    choices = []
    for host in Host.objects.exclude(pk=guest.host_id).order_by("name"):
        failed = [check.message for check in (run(guest, host, options)
                                               for run in STATIC_CHECKS) if not check.ok]
        choices.append((host, " ".join(failed)))
    return choices
