"""Lab hosts become ordinary hosts of the app, flagged as lab hosts.

A lab host's libvirtd answers over qemu+tcp on loopback, in the lab's private namespaces
(``allow_insecure_transport``), and its pools are directories of this machine, ``lab-shared``
one directory for every lab host (``files_local``: the app opens the volume files itself and a
migration between lab hosts needs no block copy).
"""

from __future__ import annotations

from hosts.models import Host
from hosts.services import enrol_host
from lab.control import SHARED_POOL
from lab.daemons import LabHost
from storage.inventory import mark_shared


def register_lab_host(lab_host: LabHost) -> tuple[Host, bool]:
    """Enrol (or find) the lab host; its lab-shared pool is storage every lab host writes.

    Returns the host and whether it was enrolled just now.
    """
    host = Host.objects.filter(uri=lab_host.uri).first()
    created = host is None
    if host is None:
        host = enrol_host(name=lab_host.name, uri=lab_host.uri, user=None, is_lab=True,
                          allow_insecure_transport=True, files_local=True)
    mark_shared(host, SHARED_POOL)
    return host, created
