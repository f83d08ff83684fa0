from __future__ import annotations

from django.db import models
from django.urls import reverse

from guests.errors import GuestError
from hosts.models import Host


class Guest(models.Model):
    """A domain on a host, cached from libvirt (libvirt stays the source of truth)."""

    busy_error = GuestError  # how a job lock's refusal is raised (xenweb.jobs.locks)

    class State(models.TextChoices):
        RUNNING = "running", "running"
        BLOCKED = "blocked", "blocked"
        PAUSED = "paused", "paused"
        SHUTDOWN = "shutdown", "shutting down"
        SHUTOFF = "shutoff", "shut off"
        CRASHED = "crashed", "crashed"
        PMSUSPENDED = "pmsuspended", "suspended by guest"
        UNKNOWN = "unknown", "unknown"

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="guests")
    uuid = models.UUIDField()
    name = models.CharField(max_length=255)
    state = models.CharField(max_length=12, choices=State.choices, default=State.UNKNOWN,
                             db_index=True)
    os_type = models.CharField(max_length=16, blank=True)  # xen (PV), hvm, …
    vcpus = models.PositiveIntegerField(default=0)
    memory_mib = models.PositiveBigIntegerField(default=0)
    max_memory_mib = models.PositiveBigIntegerField(default=0)
    is_privileged = models.BooleanField(default=False)  # Domain-0
    autostart = models.BooleanField(default=False)
    # The last save of the guest's memory, for restore (guests.save_images): the volume
    # the app created for it (its path in `saved_path`), or on the demo host a file in the
    # data dir's saves folder (no volume). Never an operator's path.
    saved_path = models.CharField(max_length=1024, blank=True)
    saved_volume = models.ForeignKey("storage.Volume", null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="saved_memory_of")
    # The domain XML the guest ran with when it was saved: what the image must hold.
    saved_definition = models.TextField(blank=True)
    # libvirt holds a managed-save image: the next start resumes from it.
    has_managed_save = models.BooleanField(default=False)
    # Disks and NICs as libvirt describes them ({"disks": [...], "nics": [...]}).
    devices = models.JSONField(default=dict, blank=True)
    # Placement labels (e.g. "dmz-firewall"): conflict sets say which never share a host.
    labels = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["host__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "uuid"], name="guest_unique_per_host"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("guests:detail", args=[self.pk])

    @property
    def has_saved_memory(self) -> bool:
        """A save of this guest the app made and can restore (see guests.save_images)."""
        return bool(self.saved_path)

    @property
    def type_label(self) -> str:
        return {"xen": "PV", "hvm": "HVM", "xenpvh": "PVH"}.get(self.os_type, self.os_type)


class ConflictSet(models.Model):
    """Labels whose guests must never run on the same physical host (a Chinese Wall, as in
    sHype/ACM): two guests carrying different — or the same — labels of one set conflict."""

    name = models.CharField(max_length=100, unique=True)
    labels = models.JSONField(default=list)
    description = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class LvmSnapshot(models.Model):
    """One snapshot of a guest whose disks are logical volumes: an LVM snapshot volume per
    disk, taken together. libvirt knows the volumes; the name, description and grouping
    live here (domain snapshots of qcow2 disks are libvirt's own metadata instead)."""

    guest = models.ForeignKey(Guest, on_delete=models.CASCADE, related_name="lvm_snapshots")
    name = models.CharField(max_length=64)
    description = models.TextField(blank=True)
    # [{"target": "xvda", "origin": "/dev/vg/lv", "path": "/dev/vg/lv.snap.NAME",
    #   "size": bytes}, …]
    volumes = models.JSONField(default=list)
    guest_state = models.CharField(max_length=12, blank=True)  # when taken
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["guest", "created_at", "name"]
        constraints = [
            models.UniqueConstraint(fields=["guest", "name"], name="lvm_snapshot_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.guest}@{self.name}"


class GuestSample(models.Model):
    """Raw counters of a guest at one moment (rates come from two samples)."""

    guest = models.ForeignKey(Guest, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField(db_index=True)
    cpu_time_ns = models.BigIntegerField()
    vcpus = models.PositiveIntegerField(default=0)
    memory_kib = models.BigIntegerField(default=0)
    disk_read_bytes = models.BigIntegerField(default=0)
    disk_write_bytes = models.BigIntegerField(default=0)
    net_rx_bytes = models.BigIntegerField(default=0)
    net_tx_bytes = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["guest", "at"]
        indexes = [models.Index(fields=["guest", "at"], name="guestsample_guest_at")]

    def __str__(self) -> str:
        return f"{self.guest_id}@{self.at:%Y-%m-%d %H:%M:%S}"


# States in which a guest's hypervisor holds its disks open.
DISK_HOLDING_STATES = (
    Guest.State.RUNNING, Guest.State.BLOCKED, Guest.State.PAUSED, Guest.State.SHUTDOWN,
    Guest.State.PMSUSPENDED,
)
