"""Xen lab hosts become ordinary hosts of the app, enrolled over xen+ssh with a pinned key."""

from __future__ import annotations

from hosts.models import Host
from hosts.services import enrol_host, set_migration_uri
from storage.bootfiles import set_boot_files_dir

from .manager import TINY_GUEST_DIR, XenHost, peer_migration_uri


def register_xen_host(xen_host: XenHost) -> tuple[Host, bool]:
    """Enrol (or find) the Xen lab host; returns the host and whether it was enrolled now.

    The lab generated the host's SSH key, so it passes that key's fingerprint as the one
    confirmed: enrolment checks the key the host offers against it and pins it in the
    appliance's known_hosts. The transport is authenticated SSH with the appliance's key;
    ``is_lab`` only flags the host as a lab host, and it gets neither capability: its URI
    needs no insecure transport, and its pools are directories of the dom0 (a QEMU VM), not
    files of this machine (the storage both dom0s share is their own NFS). A host on the
    storage network is reached there by the other dom0 when a guest migrates to it (its
    migration URI). The dom0's tiny guest directory (seeded at boot) is its boot files
    directory: guests boot the tiny guest's kernel and initrd by file name, as operators do.
    """
    host = Host.objects.filter(uri=xen_host.uri).first()
    if host is not None:
        if host.boot_files_dir != TINY_GUEST_DIR:
            set_boot_files_dir(host, TINY_GUEST_DIR, user=None)
        return host, False
    host = enrol_host(
        name=xen_host.name,
        uri=xen_host.uri,
        user=None,
        is_lab=True,
        allow_insecure_transport=False,
        files_local=False,
        host_key_fingerprint=xen_host.host_key_fingerprint,
    )
    if xen_host.storage_address:
        set_migration_uri(host, peer_migration_uri(xen_host), user=None)
    set_boot_files_dir(host, TINY_GUEST_DIR, user=None)
    return host, True
