"""The ISO library: pools marked for installation media, offered as CD-ROMs by the wizard."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from hosts.models import Host
from storage.access import why_not_a_disk
from storage.models import Volume

# An ISO image: libvirt says iso, or a raw file named *.iso (dir pools often say raw).
ISO_IMAGE = Q(format="iso") | (Q(name__iendswith=".iso") & Q(format__in=("raw", "")))


def iso_images(host: Host | int | None = None) -> QuerySet[Volume]:
    """ISO images in the ISO library pools (of one host, or of all)."""
    images = Volume.objects.select_related("pool__host").filter(
        ISO_IMAGE, pool__iso_library=True).order_by("pool__host__name", "pool__name", "name")
    if host is not None:
        images = images.filter(pool__host=host)
    return images


def library_image(volume_id: int, host: Host) -> Volume:
    """The ISO image with that id in an ISO library pool of `host`; ValueError says why not."""
    volume = Volume.objects.select_related("pool__host").filter(pk=volume_id).first()
    if volume is None:
        raise ValueError(f"There is no volume with id {volume_id}.")
    if volume.pool.host_id != host.pk:
        raise ValueError(f"The CD-ROM image '{volume.name}' is on host '{volume.pool.host}', "
                         f"not on '{host}'.")
    if not volume.pool.iso_library:
        raise ValueError(f"Pool '{volume.pool.name}' is not an ISO library: mark it as one "
                         f"(Storage → {volume.pool.name}) to boot guests from its images.")
    reason = why_not_a_disk(volume)
    if reason:
        raise ValueError(reason)
    if not iso_images(host).filter(pk=volume.pk).exists():
        raise ValueError(f"'{volume.name}' is not an ISO image (format {volume.format or '?'}).")
    return volume
