"""Storage pages: the overview per host, a pool with its volumes, and the forms.

Thin: every change goes through storage.pool_services / services / sharing (the API's rules).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from hosts.models import Host
from hosts.virt import pool_xml as px
from storage import access, attachments, pool_services, selectors, services, sharing
from storage.errors import StorageError
from storage.iso_library import ISO_IMAGE
from storage.models import Pool, Volume
from storage.units import parse_size
from xenweb.ids import parse_id
from xenweb.jobs.models import Job
from xenweb.jobs.visibility import can_view, visible_jobs

ADMIN_ONLY = "hosts.change_host"  # as in storage.api_pools
POOL_FIELDS = ("host", "type", "name", "target_path", "source_host", "source_dir", "devices",
               "source_name", "target_iqn", "port", "initiator_iqn")


def _pools_by_host(host_id: str | None) -> list[tuple[Host, list[tuple[Pool, list[Pool]]]]]:
    hosts = Host.objects.order_by("name")
    if host_id:
        hosts = hosts.filter(pk=parse_id(host_id)) if parse_id(host_id) else hosts.none()
    pools = list(selectors.pools())
    grouped = []
    for host in hosts:
        rows = [(pool, sharing.same_storage(pool)) for pool in pools if pool.host_id == host.pk]
        grouped.append((host, rows))
    return grouped


@permission_required("storage.view_pool", raise_exception=True)
@require_safe
def pool_list(request: HttpRequest) -> HttpResponse:
    host_id = request.GET.get("host") or None
    return render(request, "storage/list.html", {
        "hosts": _pools_by_host(host_id), "host_id": host_id,
        "all_hosts": Host.objects.order_by("name"),
    })


def _visible_or_none(user: Any, job: Job | None) -> Job | None:
    return job if job is not None and can_view(user, job) else None


@permission_required("storage.view_pool", raise_exception=True)
@require_safe
def pool_detail(request: HttpRequest, pk: int) -> HttpResponse:
    pool = get_object_or_404(selectors.pools(), pk=pk)
    users = attachments.users_by_path(pool)
    # A volume's busy job is linked only for those who may see it (viewers: their own).
    volumes = [(volume, users.get(volume.path, []) if volume.path else [],
                _visible_or_none(request.user, services.busy_job(volume)))
               for volume in pool.volumes.select_related("pool", "pool__host")]
    iso_ids = set(pool.volumes.filter(ISO_IMAGE).values_list("pk", flat=True))
    return render(request, "storage/detail.html", {
        "pool": pool, "volumes": volumes, "iso_ids": iso_ids,
        "shared_with": sharing.same_storage(pool),
        "in_use": attachments.guests_on_pool(pool),
        "jobs": visible_jobs(request.user).filter(target_type="storage.volume", target_id__in=[
            str(v.pk) for v, _u, _b in volumes]).order_by("-pk")[:10],
        "formats": services.FORMATS,
    })


def _pool_form_data(post: Any) -> dict[str, Any]:
    data: dict[str, Any] = {key: post.get(key, "").strip() for key in POOL_FIELDS}
    data["devices"] = [d.strip() for d in post.get("devices", "").replace(",", "\n")
                       .splitlines() if d.strip()]
    data["source_format"] = post.get("fs_format" if data["type"] == "fs" else "netfs_format", "")
    for flag in ("build", "start", "autostart"):
        data[flag] = post.get(flag) == "on"
    return data


@permission_required(ADMIN_ONLY, raise_exception=True)
def pool_create(request: HttpRequest) -> HttpResponse:
    error = ""
    post: dict[str, Any] = {"start": "on", "autostart": "on", "type": "dir",
                            "host": request.GET.get("host", "")}
    if request.method == "POST":
        post = request.POST.dict()
        data = _pool_form_data(request.POST)
        host_id = parse_id(data["host"])
        host = Host.objects.filter(pk=host_id).first() if host_id else None
        try:
            if host is None:
                raise StorageError("Choose the host the pool is defined on.")
            spec = pool_services.spec_from_fields(data["type"], data)
            pool = pool_services.create_pool(host, spec, build=data["build"],
                                             start=data["start"], autostart=data["autostart"],
                                             user=request.user, request=request)
        except StorageError as exc:
            error = str(exc)
        else:
            messages.success(request, f"Pool '{pool.name}' was defined on {host}"
                             + (" and started." if pool.active else "."))
            return redirect(pool)
    return render(request, "storage/create.html", {
        "hosts": Host.objects.order_by("name"), "types": pool_services.TYPE_LABELS,
        "fs_formats": px.FS_FORMATS, "netfs_formats": px.NETFS_FORMATS,
        "buildable": px.BUILDABLE_TYPES, "error": error, "post": post,
    }, status=400 if error else 200)


def _admin_only(request: HttpRequest, pool: Pool, doing: str) -> None:
    """403 with the reason for a non-administrator on the boot files pool."""
    try:
        access.check_pool_use(pool, request.user, doing)
    except access.AdminOnlyPool as exc:
        raise PermissionDenied(str(exc)) from exc


def _act(request: HttpRequest, work: Callable[[], Any], done: str) -> None:
    try:
        work()
    except StorageError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)


@require_POST
def pool_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    pool = get_object_or_404(Pool.objects.select_related("host"), pk=pk)
    needed = ADMIN_ONLY if action in ("delete", "sharing") else "storage.change_pool"
    if not request.user.has_perm(needed):
        raise PermissionDenied
    if action in ("stop", "autostart"):
        _admin_only(request, pool, f"{action} the pool of")
    who = {"user": request.user, "request": request}
    post = request.POST
    if action == "start":
        _act(request, lambda: pool_services.start_pool(pool, **who),
             f"Pool '{pool.name}' started.")
    elif action == "stop":
        _act(request, lambda: pool_services.stop_pool(pool, **who),
             f"Pool '{pool.name}' stopped.")
    elif action == "autostart":
        enabled = post.get("enabled") == "1"
        _act(request, lambda: pool_services.set_autostart(pool, enabled, **who),
             f"Pool '{pool.name}': autostart {'on' if enabled else 'off'}.")
    elif action == "refresh":
        _act(request, lambda: services.refresh_pool(pool, **who),
             f"Pool '{pool.name}' re-read from the host.")
    elif action == "iso-library":
        enabled = post.get("enabled") == "1"
        _act(request, lambda: pool_services.set_iso_library(pool, enabled, **who),
             f"Pool '{pool.name}' is {'now' if enabled else 'no longer'} an ISO library.")
    elif action == "sharing":
        choice = post.get("shared", "auto")
        shared = {"yes": True, "no": False}.get(choice)
        _act(request, lambda: sharing.declare_sharing(
            pool, shared, label=post.get("label", ""), **who), f"Sharing of '{pool.name}' "
            f"set to {'automatic' if shared is None else 'shared' if shared else 'not shared'}.")
    else:  # delete
        delete_storage = post.get("delete_storage") == "1"
        try:
            pool_services.delete_pool(pool, delete_storage=delete_storage, **who)
        except StorageError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Pool '{pool.name}' was deleted from {pool.host}.")
            return redirect("storage:list")
    return redirect(pool)


@require_POST
@permission_required("storage.add_volume", raise_exception=True)
def volume_create(request: HttpRequest, pk: int) -> HttpResponse:
    pool = get_object_or_404(Pool.objects.select_related("host"), pk=pk)
    _admin_only(request, pool, "create")
    post = request.POST
    try:
        try:
            size = parse_size(post.get("size", "").strip())
        except ValueError as exc:
            raise StorageError(str(exc)) from exc
        volume = services.create_volume(
            pool, name=post.get("name", "").strip(), capacity=size,
            fmt=post.get("format", "raw"), preallocate=post.get("allocation") == "preallocated",
            user=request.user, request=request)
    except StorageError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Volume '{volume.name}' was created.")
    return redirect(pool)


VOLUME_PERMS = {"resize": "storage.change_volume", "clone": "storage.add_volume",
                "wipe": "storage.change_volume", "delete": "storage.delete_volume"}


@require_POST
def volume_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    volume = get_object_or_404(Volume.objects.select_related("pool__host"), pk=pk)
    if not request.user.has_perm(VOLUME_PERMS[action]):
        raise PermissionDenied
    _admin_only(request, volume.pool, action)
    who = {"user": request.user, "request": request}
    try:
        if action == "resize":
            try:
                size = parse_size(request.POST.get("size", "").strip())
            except ValueError as exc:
                raise StorageError(str(exc)) from exc
            services.resize_volume(volume, size, **who)
            messages.success(request, f"Volume '{volume.name}' was resized.")
        elif action == "clone":
            return redirect(services.start_clone(volume, request.POST.get("name", "").strip(),
                                                 **who))
        elif action == "wipe":
            return redirect(services.start_wipe(volume, **who))
        else:
            services.delete_volume(volume, **who)
            messages.success(request, f"Volume '{volume.name}' was deleted.")
    except StorageError as exc:
        messages.error(request, str(exc))
    return redirect(volume.pool)
