from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models
from django.urls import reverse

if TYPE_CHECKING:
    from hosts.virt import VirtTarget


class Host(models.Model):
    """A hypervisor host reached through one libvirt URI."""

    class State(models.TextChoices):
        ONLINE = "online", "online"
        UNREACHABLE = "unreachable", "unreachable"
        MAINTENANCE = "maintenance", "maintenance"
        UNKNOWN = "unknown", "unknown"

    name = models.CharField(max_length=100, unique=True)
    uri = models.CharField(max_length=500, unique=True)
    # Who registered the host: the lab (``lab/``) or an operator. Informational only: what
    # the app may do with a host is in the capabilities below.
    is_lab = models.BooleanField(default=False)
    # The libvirt connection may use a transport without TLS or SSH host-key pinning
    # (qemu+tcp to the lab's libvirtds in their private namespaces).
    allow_insecure_transport = models.BooleanField(default=False)
    # The host's storage pool paths are files of this (the appliance's) machine: the app may
    # open them directly, and two such hosts see one file system (the same path is the same
    # file, so a migration between them needs no block copy).
    files_local = models.BooleanField(default=False)
    state = models.CharField(max_length=12, choices=State.choices, default=State.UNKNOWN)
    state_since = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    hostname = models.CharField(max_length=255, blank=True)
    hypervisor_type = models.CharField(max_length=32, blank=True)
    hypervisor_version = models.CharField(max_length=32, blank=True)
    libvirt_version = models.CharField(max_length=32, blank=True)
    arch = models.CharField(max_length=32, blank=True)
    cpus = models.PositiveIntegerField(default=0)
    memory_mib = models.PositiveBigIntegerField(default=0)
    # Parsed capabilities: guest types (xen/hvm/xenpvh), CPU, topology (see hosts.capabilities).
    capabilities = models.JSONField(default=dict, blank=True)
    # The migration allow-list: guests may be migrated to this host only when it is on it.
    accepts_migrations = models.BooleanField(default=True)
    # How other hosts' libvirtd reach this one for peer-to-peer migration (blank: ``uri``).
    migration_uri = models.CharField(max_length=500, blank=True)
    # The directory on the host whose files operators may boot guests with (kernels,
    # initrds), set by administrators; the app serves it as a libvirt dir pool (see
    # storage.bootfiles). Empty: no boot files.
    boot_files_dir = models.CharField(max_length=1024, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("hosts:detail", args=[self.pk])

    @property
    def in_process_only(self) -> bool:
        """The demo host lives inside the web process (see hosts.virt.demo)."""
        from hosts.virt.demo import is_private_mock

        return is_private_mock(self.uri)

    @property
    def virt_target(self) -> VirtTarget:
        """What the adapter (``hosts.virt``) takes to reach this host: its URI and whether
        an insecure transport may be used (``allow_insecure_transport``)."""
        from hosts.virt import VirtTarget
        from hosts.virt.errors import name_host

        name_host(self.uri, self.name)  # its messages say 'rack-7', not the address
        return VirtTarget(self.uri, self.allow_insecure_transport)


class HostSample(models.Model):
    """Raw counters of a host at one moment (rates come from two samples)."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField(db_index=True)
    cpu_busy_ns = models.BigIntegerField()
    cpu_total_ns = models.BigIntegerField()
    memory_total_kib = models.BigIntegerField()
    memory_free_kib = models.BigIntegerField(null=True)
    guests_running = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["host", "at"]
        indexes = [models.Index(fields=["host", "at"], name="hostsample_host_at")]

    def __str__(self) -> str:
        return f"{self.host_id}@{self.at:%Y-%m-%d %H:%M:%S}"
