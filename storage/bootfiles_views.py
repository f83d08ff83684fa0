"""The boot files directory on the host's page (its form posts here; its files are listed
there through hosts.signals.host_page, see storage.apps)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_POST

from hosts.models import Host
from hosts.views import change_setting
from hosts.virt import VirtError
from storage import bootfiles


@require_POST
@permission_required("hosts.change_host", raise_exception=True)
def host_boot_files_dir(request: HttpRequest, pk: int) -> HttpResponse:
    return change_setting(request, pk, bootfiles.set_boot_files_dir, "boot_files_dir",
                          "boot files directory", (VirtError, bootfiles.BootFilesError))


def host_page_context(sender: Any, host: Host, **kwargs: Any) -> dict[str, Any]:
    """The files of the host's boot files directory, as last listed."""
    return {"boot_files": bootfiles.offered(host)}
