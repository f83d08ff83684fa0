from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from hosts.models import Host
from hosts.virt.pool_xml import CREATABLE_TYPES
from storage.errors import StorageError


class Pool(models.Model):
    """A libvirt storage pool on a host, cached from libvirt."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="pools")
    uuid = models.UUIDField()
    name = models.CharField(max_length=255)
    pool_type = models.CharField(max_length=32, blank=True)
    active = models.BooleanField(default=False)
    capacity = models.PositiveBigIntegerField(default=0)
    allocation = models.PositiveBigIntegerField(default=0)
    available = models.PositiveBigIntegerField(default=0)
    autostart = models.BooleanField(default=False)
    target_path = models.CharField(max_length=1024, blank=True)
    # The <source> of the pool XML (hosts, dir, devices, name, format, initiator).
    source = models.JSONField(default=dict, blank=True)
    # Identity of the underlying storage ("nfs:server:/export", "iscsi:portal:iqn"…),
    # computed from the pool XML at reconcile (storage.sharing); pools of several hosts
    # with the same key (and shared) are the same storage.
    storage_key = models.CharField(max_length=1024, blank=True, db_index=True)
    # The admin's word on sharing: None = decided from the pool type, True/False = declared.
    shared_declared = models.BooleanField(null=True, default=None)
    # Optional name that groups declared pools instead of the computed key.
    share_label = models.CharField(max_length=64, blank=True)
    # Effective: storage every host that mounts it can write (NFS, iSCSI, shared LVM…),
    # derived from the two fields above; migration uses it.
    shared = models.BooleanField(default=False)
    # Its ISO images are offered as CD-ROMs by the create-guest wizard.
    iso_library = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["host__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "uuid"], name="pool_unique_per_host"),
        ]

    def __str__(self) -> str:
        return f"{self.host}/{self.name}"

    def get_absolute_url(self) -> str:
        return reverse("storage:pool", args=[self.pk])

    @property
    def share_key(self) -> str:
        """What pools of the same storage have in common ("" when nothing is known)."""
        return f"label:{self.share_label}" if self.share_label else self.storage_key

    @property
    def free_percent(self) -> float | None:
        return 100.0 * self.available / self.capacity if self.capacity else None

    @property
    def used_percent(self) -> int:
        return round(100 * self.allocation / self.capacity) if self.capacity else 0

    @property
    def managed(self) -> bool:
        """Of a type the app creates and runs; other types are listed read-only."""
        return self.pool_type in CREATABLE_TYPES

    @property
    def low_space(self) -> bool:
        """Active, and less free space than POOL_LOW_SPACE_PERCENT of its capacity."""
        free = self.free_percent
        return self.active and free is not None and free < settings.POOL_LOW_SPACE_PERCENT


class Volume(models.Model):
    busy_error = StorageError  # how a job lock's refusal is raised (xenweb.jobs.locks)

    class Content(models.TextChoices):
        """Whether a hypervisor may open the volume's content (storage.content)."""

        # Checked as a whole, created empty by the app, or found on the host as it is.
        READY = "ready", "ready"
        # Bytes are being written (an upload, an import's conversion) and not yet checked:
        # never attached, cloned, started or exported; emptied if its writer died.
        WRITING = "writing", "being written"
        # libvirt now reads another format than the one checked (a guest wrote another
        # format's header into a raw disk): unusable until wiped or uploaded again.
        CHANGED = "changed", "format changed"

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="volumes")
    name = models.CharField(max_length=255)
    path = models.CharField(max_length=1024, blank=True)
    format = models.CharField(max_length=16, blank=True)
    capacity = models.PositiveBigIntegerField(default=0)
    allocation = models.PositiveBigIntegerField(default=0)
    content_state = models.CharField(max_length=16, choices=Content.choices,
                                     default=Content.READY)
    # The job writing the content while it is WRITING (a plain id: the row may be gone).
    content_job = models.PositiveBigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pool", "name"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "name"], name="volume_unique_per_pool"),
        ]

    def __str__(self) -> str:
        return self.name


class VolumeAttachment(models.Model):
    """A file a guest uses, as the guest cache last described the guest: one row per disk
    (now and at the next boot), per saved-memory image and per offline migration's save
    file. Every "who uses this volume" question reads these rows (storage.attachments).

    The guest is named by a lazy reference: guests write the rows whenever a cached guest
    changes (guests.attachments), storage only reads them and never imports guests.
    """

    class Role(models.TextChoices):
        DISK = "disk", "disk"
        NEXT_BOOT_DISK = "next_boot_disk", "disk from the next boot"
        SAVED_MEMORY = "saved_memory", "saved memory"
        MIGRATION_SAVE = "migration_save", "memory saved by an offline migration"

    guest = models.ForeignKey("guests.Guest", on_delete=models.CASCADE,
                              related_name="attachments")
    role = models.CharField(max_length=16, choices=Role.choices)
    path = models.CharField(max_length=1024)
    target = models.CharField(max_length=32, blank=True)  # the guest's device name (xvda)
    writable = models.BooleanField(default=False)
    shareable = models.BooleanField(default=False)
    # The guest runs (or is paused, suspended...): its hypervisor holds the file open.
    in_use = models.BooleanField(default=False)

    class Meta:
        ordering = ["guest", "role", "target", "path"]
        indexes = [models.Index(fields=["path"], name="attachment_path")]

    def __str__(self) -> str:
        return f"{self.path} ({self.get_role_display()} of guest {self.guest_id})"
