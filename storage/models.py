from __future__ import annotations

from django.db import models

from hosts.models import Host


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
    # Storage every host that mounts it can write (NFS, iSCSI, shared LVM…): migration uses it.
    shared = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["host__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "uuid"], name="pool_unique_per_host"),
        ]

    def __str__(self) -> str:
        return f"{self.host}/{self.name}"


class Volume(models.Model):
    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="volumes")
    name = models.CharField(max_length=255)
    path = models.CharField(max_length=1024, blank=True)
    format = models.CharField(max_length=16, blank=True)
    capacity = models.PositiveBigIntegerField(default=0)
    allocation = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pool", "name"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "name"], name="volume_unique_per_pool"),
        ]

    def __str__(self) -> str:
        return self.name
