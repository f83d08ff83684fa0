"""Making a guest with new volumes: create them, fill them, define the guest; undo it all
on any failure.

Guest creation (guests.create), the V2V import and P2V share this sequence; only `fill`
differs (nothing, converted images, copied source disks). The volumes are made through
storage.services (its checks and one audit record each); a job's volumes are WRITING
until fill has checked their content (`storage.content.mark_ready`), and no guest is
defined on a volume that is not ready. On a failure, anywhere and of any kind, the undo
runs once: a domain defined without its row is undefined, and every volume made is
deleted (audited) except those fill chose to keep, which a cancel deletes too. Volumes
that existed before (a request's existing disks) are never touched. The error reaches the
caller unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from guests.errors import GuestError
from guests.models import Guest
from guests.services import define_guest, store_guest
from hosts.models import Host
from hosts.virt import VirtError, VirtObjectNotFound
from hosts.virt import domain_xml as dx
from hosts.virt import domains as virt_domains
from storage import content
from storage import services as storage
from storage.errors import StorageError
from storage.models import Pool, Volume
from xenweb.jobs.errors import JobCancelled
from xenweb.jobs.models import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuestPlan:
    """A checked guest: its host and its spec (with the disks that exist already); the new
    volumes are added to it as disks."""

    host: Host
    spec: dx.DomainSpec
    labels: tuple[str, ...] = ()
    # How the new volumes are attached (None: the driver's default, dx.disk_layout).
    disk_layout: dx.DiskLayout | None = None


@dataclass(frozen=True)
class NewVolume:
    """A volume to make for the guest, and the disk name it gets ("": the next free one)."""

    pool: Pool
    name: str
    capacity: int
    format: str = "raw"
    target: str = ""


class Provisioning:
    """One run of the sequence; `fill` gets it and works on `volumes`."""

    def __init__(self, plan: GuestPlan, volumes: Sequence[NewVolume], *, user: Any,
                 request: Any = None, job: Job | None = None) -> None:
        self.plan = plan
        self.asked = list(volumes)
        self.user = user
        self.request = request
        self.job = job
        self.volumes: list[Volume] = []  # the guest's new disks, in the order asked
        self.guest: Guest | None = None
        self.removed: list[str] = []  # after a failure: the paths the undo deleted
        self._formats: list[str] = []
        self._made: list[Volume] = []
        self._kept: set[int] = set()
        self._defined = ""  # the uuid of the domain once its definition was attempted

    def replace(self, index: int, volume: Volume) -> None:
        """Fill made `volume` from the one at `index` (a converted copy): it becomes that
        disk, is undone like the others, and is WRITING until fill marks it ready. Fill
        removes the one it replaces itself (storage.services.discard_new_volume)."""
        self.volumes[index] = volume
        self._formats[index] = volume.format or "raw"
        self._made.append(volume)
        if self.job is not None:
            content.mark_writing(volume, self.job)

    def keep(self, volume: Volume) -> None:
        """Keep `volume` if a later step fails (its content was checked and is worth
        keeping); a cancel deletes it all the same."""
        self._kept.add(volume.pk)

    def adjust(self, *, disk_layout: dx.DiskLayout | None, nic_model: str = "") -> None:
        """Fill found how the guest must see its devices (a conversion's inspection of the
        copied disk): the new volumes' bus and names, the NICs' model."""
        spec = self.plan.spec
        if nic_model:
            spec = dataclasses.replace(spec, nics=tuple(
                dataclasses.replace(nic, model=nic_model) for nic in spec.nics))
        self.plan = dataclasses.replace(self.plan, spec=spec,
                                        disk_layout=disk_layout or self.plan.disk_layout)

    def run(self, fill: Callable[[Provisioning], None] | None = None) -> Guest:
        try:
            self._targets()
            for new in self.asked:
                self._create(new)
            if fill is not None:
                fill(self)
            self._check_ready()
            guest = self.guest = self._define(self._targets())
        except BaseException as exc:
            self._undo(cancelled=isinstance(exc, JobCancelled))
            raise
        return guest

    def _targets(self) -> list[str]:
        """The disk names of the new volumes, refused before anything is made."""
        spec = self.plan.spec
        layout = self._layout()
        taken = {disk.target for disk in spec.disks} | {new.target for new in self.asked}
        free = iter(name for name in layout.names() if name not in taken)
        targets = [new.target or next(free, "") for new in self.asked]
        if "" in targets:
            raise GuestError("No device name is left for a new disk: give fewer disks.")
        return targets

    def _layout(self) -> dx.DiskLayout:
        spec = self.plan.spec
        return self.plan.disk_layout or dx.disk_layout(spec.domain_type, spec.os_type)

    def _create(self, new: NewVolume) -> None:
        volume = storage.create_volume(new.pool, name=new.name, capacity=new.capacity,
                                       fmt=new.format, user=self.user, request=self.request)
        self._made.append(volume)
        self.volumes.append(volume)
        self._formats.append(new.format)
        if self.job is not None:
            content.mark_writing(volume, self.job)

    def _check_ready(self) -> None:
        for volume in self.volumes:
            row = Volume.objects.filter(pk=volume.pk).first()
            if row is None:
                raise GuestError(f"Volume '{volume.name}' is gone: it cannot be a disk of a "
                                 "new guest.")
            reason = content.why_unusable(row)
            if reason:
                raise GuestError(f"{reason} It cannot be a disk of a new guest.")

    def _define(self, targets: list[str]) -> Guest:
        plan = self.plan
        spec = plan.spec
        bus = self._layout().bus
        disks = [*spec.disks, *(
            dx.DiskSpec(source=volume.path, target=target, bus=bus, format=fmt)
            for volume, target, fmt in zip(self.volumes, targets, self._formats, strict=True))]
        # The uuid is chosen here so that a definition that fails half-way can be found.
        spec = dataclasses.replace(spec, uuid=spec.uuid or str(uuid.uuid4()),
                                   disks=tuple(sorted(disks, key=lambda disk: disk.target)))
        self._defined = spec.uuid or ""
        info = define_guest(spec, host=plan.host, user=self.user, request=self.request)
        return store_guest(info, host=plan.host, labels=plan.labels, user=self.user,
                           request=self.request)

    def _undo(self, *, cancelled: bool) -> None:
        if self._defined and self.guest is None:
            self._undefine()
        for volume in reversed(self._made):
            if volume.pk not in self._kept or cancelled:
                self._remove(volume)

    def _undefine(self) -> None:
        host = self.plan.host
        try:
            virt_domains.undefine(host.virt_target, self._defined)
        except VirtObjectNotFound:
            pass  # the definition itself failed: nothing was defined
        except Exception:  # never hide the error that made the undo run
            log.exception("could not undefine the half-made guest %s on %s",
                          self.plan.spec.name, host)

    def _remove(self, volume: Volume) -> None:
        try:
            row = Volume.objects.select_related("pool__host").filter(pk=volume.pk).first()
            if row is None:  # fill removed it already (a staging copy)
                return
            storage.discard_new_volume(row, user=self.user, request=self.request)
        except (StorageError, VirtError) as exc:
            log.warning("could not remove volume %s after a failed provisioning: %s",
                        volume.path, exc)
        except Exception:  # never hide the error that made the undo run
            log.exception("could not remove volume %s after a failed provisioning",
                          volume.path)
        else:
            self.removed.append(row.path)


def provision(plan: GuestPlan, volumes: Sequence[NewVolume],
              fill: Callable[[Provisioning], None] | None = None, *, user: Any,
              request: Any = None, job: Job | None = None) -> Guest:
    """Make `volumes`, let `fill` write them, define the guest on them (and on the plan's
    own disks); on any failure nothing that was made stays (see the module's doc)."""
    return Provisioning(plan, volumes, user=user, request=request, job=job).run(fill)
