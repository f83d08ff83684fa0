"""The V2V pages: pick a file in the import area, inspect it, adjust, import (or convert it
to an XVA file); export a guest.

Thin: the same services as the API (inspect_source, start_import, start_export); the job
page shows the progress and, when done, the new guest or the download.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from conversions.v2v import services
from conversions.v2v.proposal import ImportRefused
from conversions.v2v.sources import import_root
from guests.models import Guest
from storage.models import Pool

SOURCE_SUFFIXES = (".vmx", ".ova", ".ovf", ".xva", ".vmdk", ".gz", ".zst")
MAX_LISTED = 200


def importable_files() -> list[str]:
    """Files in the import area an import can start from, by path inside it."""
    root = import_root()
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name.lower().endswith(
                SOURCE_SUFFIXES):
            found.append(str(path.relative_to(root)))
            if len(found) >= MAX_LISTED:
                break
    return found


def _import_params(post: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"source": post.get("source", ""),
                              "format": post.get("format", "qcow2"),
                              "keep_macs": post.get("keep_macs") == "on"}
    if post.get("output") == "xva":
        params["output"] = "xva"
    else:
        pool = Pool.objects.filter(pk=post.get("pool") or 0).first()
        if pool is None:
            raise ImportRefused("Choose the pool the disks go to.")
        params.update(pool=pool.pk, host=pool.host_id)
    for key in ("name", "type", "network"):
        if post.get(key, "").strip():
            params[key] = post[key].strip()
    for key in ("vcpus", "memory_mib"):
        if post.get(key, "").strip():
            try:
                params[key] = int(post[key])
            except ValueError:
                raise ImportRefused(f"{key.replace('_', ' ')} must be a number.") from None
    return params


@permission_required("guests.add_guest", raise_exception=True)
def v2v_page(request: HttpRequest) -> HttpResponse:
    post = request.POST
    context: dict[str, Any] = {
        "post": post, "files": importable_files(), "area": str(import_root()),
        "pools": Pool.objects.select_related("host").filter(active=True).order_by(
            "host__name", "name"),
    }
    if request.method == "POST":
        try:
            if post.get("step") == "start":
                job = services.start_import(_import_params(post), user=request.user,
                                            request=request)
                return redirect("jobs:detail", job.pk)
            context["proposal"] = services.inspect_source(post.get("source", ""),
                                                          user=request.user, request=request)
        except ImportRefused as exc:
            context["error"] = str(exc)
            if post.get("step") == "start":  # show the adjustments again
                try:
                    context["proposal"] = services.inspect_source(
                        post.get("source", ""), user=request.user, request=request)
                except ImportRefused:
                    pass
    return render(request, "conversions/v2v.html", context)


@require_POST
@permission_required("guests.change_guest", raise_exception=True)
def guest_export(request: HttpRequest, pk: int) -> HttpResponse:
    guest = get_object_or_404(Guest.objects.select_related("host"), pk=pk)
    fmt = request.POST.get("format", "")
    compress = request.POST.get("compress", "") if fmt == "xva" else ""
    if compress not in ("", "gzip", "zstd"):
        compress = ""
    try:
        disk = int(request.POST.get("disk") or 0)
        job = services.start_export(guest, fmt=fmt, compress=compress, disk=disk,
                                    user=request.user, request=request)
    except (ImportRefused, ValueError) as exc:
        messages.error(request, f"The export was not started: {exc}")
        return redirect(guest)
    return redirect("jobs:detail", job.pk)
