"""Keeping the guest cache in step with libvirt, the source of truth."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.db import transaction

from guests.job_kinds import MIGRATE_KIND
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtObjectNotFound
from hosts.virt import domains as virt
from xenweb.alerts.models import AlertKind
from xenweb.alerts.services import raise_alert
from xenweb.jobs.models import ACTIVE_STATES, Job
from xenweb.realtime import EVENTS_GROUP, broadcast


@dataclass(frozen=True)
class ReconcileResult:
    created: int
    updated: int
    removed: int

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)


def cached_fields(info: virt.DomainInfo) -> dict[str, object]:
    """The Guest row's fields as libvirt describes the domain."""
    return {
        "name": info.name,
        "state": info.state if info.state in Guest.State.values else Guest.State.UNKNOWN,
        "os_type": info.xml.os_type,
        "vcpus": info.xml.vcpus,
        "memory_mib": info.xml.memory_mib,
        "max_memory_mib": info.xml.max_memory_mib,
        "is_privileged": info.is_privileged,
        "autostart": info.autostart,
        "has_managed_save": info.managed_save,
        "devices": {"disks": [asdict(disk) for disk in info.xml.disks],
                    "next_boot_disks": [asdict(disk) for disk in info.next_boot_disks],
                    "nics": [asdict(nic) for nic in info.xml.nics],
                    "vnc_port": info.xml.vnc_port},
    }


def migrating_uuids() -> set[str]:
    """Guests a migration job is moving: the job, not the inventory, says where they are
    until it ends (both hosts know such a guest for a while)."""
    ids = Job.objects.filter(kind=MIGRATE_KIND, state__in=ACTIVE_STATES,
                             target_type="guests.guest").values_list("target_id", flat=True)
    pks = [int(pk) for pk in ids if pk.isdigit()]
    return {str(uuid) for uuid in Guest.objects.filter(pk__in=pks).values_list("uuid", flat=True)}


def reconcile_host(host: Host) -> ReconcileResult:
    """Make the host's cached guests equal what libvirt reports (raises VirtError)."""
    domains = virt.list_domains(host.virt_target)
    created = updated = 0
    moving = migrating_uuids()
    with transaction.atomic():
        cached = {str(guest.uuid): guest for guest in host.guests.select_for_update()
                  if str(guest.uuid) not in moving}
        for info in domains:
            if info.uuid in moving:
                continue
            fields = cached_fields(info)
            guest = cached.pop(info.uuid, None)
            if guest is None:
                Guest.objects.create(host=host, uuid=info.uuid, **fields)
                created += 1
            elif any(getattr(guest, key) != value for key, value in fields.items()):
                before = guest.state
                for key, value in fields.items():
                    setattr(guest, key, value)
                guest.save()
                updated += 1
                if guest.state == Guest.State.CRASHED and before != Guest.State.CRASHED:
                    alert_crash(host, guest)
        removed = len(cached)
        if cached:
            Guest.objects.filter(pk__in=[guest.pk for guest in cached.values()]).delete()
    result = ReconcileResult(created, updated, removed)
    if result.changed:
        broadcast([EVENTS_GROUP], {"type": "inventory.update", "object": "guests",
                                   "host": host.pk, "created": created, "updated": updated,
                                   "removed": removed})
    return result


def refresh_guest(host: Host, uuid: str) -> Guest | None:
    """Re-read one guest from libvirt into its cached row (created if new).

    Returns the row, or None when libvirt no longer knows the guest (the row is deleted).
    Raises VirtError when the host cannot answer. Broadcasts nothing: the caller says why.
    A guest being migrated is left to its job.
    """
    if uuid in migrating_uuids():
        return Guest.objects.filter(uuid=uuid).first()
    try:
        info = virt.get_domain(host.virt_target, uuid)
    except VirtObjectNotFound:
        Guest.objects.filter(host=host, uuid=uuid).delete()
        return None
    before = Guest.objects.filter(host=host, uuid=info.uuid).values_list(
        "state", flat=True).first()
    guest, _created = Guest.objects.update_or_create(
        host=host, uuid=info.uuid, defaults=cached_fields(info)
    )
    if guest.state == Guest.State.CRASHED and before != Guest.State.CRASHED:
        alert_crash(host, guest)
    return guest


def alert_crash(host: Host, guest: Guest | None, name: str = "", uuid: str = "") -> None:
    """A guest crashed (its state says so, or libvirt's crash event did where the domain
    was destroyed at once, as Xen's on_crash=destroy does)."""
    raise_alert(AlertKind.GUEST_CRASHED, f"guest:{guest.uuid if guest else uuid}",
                f"Guest '{guest.name if guest else name}' on host '{host}' crashed.",
                link=guest.get_absolute_url() if guest else "")
