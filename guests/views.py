from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from guests import boot, devices, services
from guests.charts import GUEST_CHARTS
from guests.create import create
from guests.create_choices import CreateChoices, choices_for, suggested_host
from guests.create_request import CreateGuestSerializer
from guests.errors import GuestError
from guests.export_formats import EXPORT_FORMATS
from guests.lifecycle import ALLOWED, DOM0_FORBIDDEN
from guests.migration.preflight import target_choices
from guests.models import Guest
from guests.snapshots.views import snapshot_context
from hosts.charts import chart_context
from hosts.guest_networks import guest_networks
from hosts.models import Host
from hosts.virt import VirtError
from storage.attachments import free_for_a_disk
from storage.models import Volume
from xenweb.jobs.models import Job
from xenweb.jobs.visibility import can_view, visible_jobs

BUTTONS = [  # (action, label, icon, style, confirmation)
    ("start", "Start", "play-fill", "success", ""),
    ("shutdown", "Shut down", "power", "secondary", "Shut down {name} cleanly?"),
    ("reboot", "Reboot", "arrow-repeat", "secondary", "Reboot {name}?"),
    ("pause", "Pause", "pause-fill", "secondary", ""),
    ("resume", "Resume", "play", "success", ""),
    ("save", "Save to volume", "download", "secondary", "Save {name}'s memory to a new "
     "volume on its host and stop it?"),
    ("managedsave", "Managed save", "hdd", "secondary", "Save {name}'s memory (managed); "
     "the next start resumes it?"),
    ("restore", "Restore", "upload", "success", ""),
    ("destroy", "Force off", "x-octagon", "danger", "Force {name} off? Like pulling the "
     "plug: unsaved data in the guest is lost."),
]


@permission_required("guests.view_guest", raise_exception=True)
@require_safe
def guest_list(request: HttpRequest) -> HttpResponse:
    guests = Guest.objects.select_related("host")
    query = request.GET.get("q", "").strip()
    if query:
        guests = guests.filter(name__icontains=query)
    state = request.GET.get("state", "")
    if state:
        guests = guests.filter(state=state)
    page = Paginator(guests, 100).get_page(request.GET.get("page"))
    return render(request, "guests/list.html", {"page": page, "q": query, "state": state})


def _buttons(guest: Guest) -> list[dict[str, Any]]:
    return [
        {"action": action, "label": label, "icon": icon, "style": style,
         "confirm": confirm.format(name=guest.name)}
        for action, label, icon, style, confirm in BUTTONS
        if guest.state in ALLOWED[action]
        and not (guest.is_privileged and action in DOM0_FORBIDDEN)
        and (action != "restore" or guest.has_saved_memory)
    ]


def _nic_choices(request: HttpRequest, guest: Guest) -> dict[str, Any]:
    """The bridges and networks a new interface of the guest can join (for those who may
    add one, on a host that answers)."""
    if not request.user.has_perm("guests.change_guest") or guest.is_privileged or \
            guest.host.state != Host.State.ONLINE:
        return {}
    try:
        return {"nic_choices": guest_networks(guest.host)}
    except VirtError as exc:
        return {"nic_choices_error": f"The networks of host '{guest.host}' cannot be read: "
                                     f"{exc}"}


@permission_required("guests.view_guest", raise_exception=True)
@require_safe
def guest_detail(request: HttpRequest, pk: int) -> HttpResponse:
    guest = get_object_or_404(Guest.objects.select_related("host", "saved_volume__pool"),
                              pk=pk)
    busy = services.busy_job(guest)
    return render(request, "guests/detail.html", {
        "guest": guest, "buttons": _buttons(guest), "busy": busy,
        "busy_visible": busy is not None and can_view(request.user, busy),
        "export_formats": EXPORT_FORMATS.items(),
        "spare_volumes": free_for_a_disk(guest.host_id),
        **_nic_choices(request, guest),
        "jobs": visible_jobs(request.user).filter(target_type="guests.guest",
                                                  target_id=str(guest.pk))[:10],
        "can_delete": guest.state in ALLOWED["delete"] and not guest.is_privileged,
        "migration_targets": target_choices(guest),
        "performance": chart_context(reverse("api:guest-metrics-metrics", args=[guest.pk]),
                                     guest.host_id, GUEST_CHARTS),
        **({} if guest.is_privileged else snapshot_context(guest)),
    })


@require_POST
@permission_required("guests.change_guest", raise_exception=True)
def guest_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    guest = get_object_or_404(Guest.objects.select_related("host"), pk=pk)
    params: dict[str, Any] = {}
    if action == "autostart":
        params["enabled"] = request.POST.get("enabled") == "1"
    try:
        outcome = services.request_action(guest, action, user=request.user, request=request,
                                          **params)
    except GuestError as exc:
        messages.error(request, str(exc))
        return redirect(guest)
    if isinstance(outcome, Job):
        return redirect(outcome)
    messages.success(request, f"{guest}: {outcome.get_state_display()}.")
    return redirect(guest)


@require_POST
@permission_required("guests.change_guest", raise_exception=True)
def guest_memory(request: HttpRequest, pk: int) -> HttpResponse:
    guest = get_object_or_404(Guest.objects.select_related("host"), pk=pk)
    try:
        asked = int(request.POST.get("memory_mib", "0"))
        services.set_memory(guest, asked, user=request.user, request=request)
    except (GuestError, ValueError) as exc:
        messages.error(request, str(exc) if isinstance(exc, GuestError)
                       else "Memory must be a whole number of MiB.")
    else:
        # What was asked, not what the guest shows yet: a running guest's balloon driver
        # gives memory back over a few seconds.
        messages.success(request, f"{guest}: memory set to {asked} MiB.")
    return redirect(guest)


@require_POST
@permission_required("guests.delete_guest", raise_exception=True)
def guest_delete(request: HttpRequest, pk: int) -> HttpResponse:
    guest = get_object_or_404(Guest.objects.select_related("host"), pk=pk)
    try:
        deleted = services.delete_guest(
            guest, confirm_name=request.POST.get("confirm", ""),
            delete_volumes=request.POST.get("delete_volumes") == "1",
            user=request.user, request=request,
        )
    except GuestError as exc:
        messages.error(request, str(exc))
        if Guest.objects.filter(pk=pk).exists():
            return redirect(guest)
        return redirect("guests:list")
    messages.success(request, f"Guest '{guest.name}' was deleted"
                     + (f" with {len(deleted)} volume(s)." if deleted else "."))
    return redirect("guests:list")


def flat_errors(errors: Any, field: str = "") -> dict[str, list[str]]:
    """DRF's nested errors ({"nics": {0: {"bridge": [...]}}}) as "nics[0].bridge" -> words."""
    if isinstance(errors, dict):
        flat: dict[str, list[str]] = {}
        for key, value in errors.items():
            name = f"{field}[{key}]" if isinstance(key, int) else (f"{field}.{key}" if field
                                                                    else str(key))
            flat.update(flat_errors(value, name))
        return flat
    if isinstance(errors, list) and errors and not all(isinstance(e, str) for e in errors):
        flat = {}
        for index, value in enumerate(errors):
            if value:
                flat.update(flat_errors(value, f"{field}[{index}]"))
        return flat
    return {field: [str(error) for error in errors]} if isinstance(errors, list) else \
        {field: [str(errors)]}


def _nics(post: Any) -> list[dict[str, str]]:
    """The form's network choice ("bridge:<name>" or "network:<name>", see the template)."""
    kind, _, value = post.get("nic", "").partition(":")
    if kind in ("bridge", "network") and value:
        nic = {kind: value}
    elif post.get("bridge"):  # the API's field, still accepted from a posted form
        nic = {"bridge": post["bridge"]}
    elif post.get("nic"):
        nic = {}  # neither: refused with "Give a bridge or a network."
    else:
        return []
    return [{**nic, **({"mac": post["mac"]} if post.get("mac") else {})}]


def _form_data(post: Any) -> dict[str, Any]:
    """The wizard's flat form as the API's create payload (one set of rules)."""
    data: dict[str, Any] = {
        key: post.get(key) for key in ("name", "type", "vcpus", "max_vcpus", "memory_mib",
                                       "max_memory_mib", "cmdline", "bootloader", "firmware")
        if post.get(key) not in (None, "")
    }
    for what in ("kernel", "initrd"):  # "file:<name>" or "volume:<id>" (see the template)
        kind, _, value = post.get(what, "").partition(":")
        if kind in ("file", "volume") and value:
            data[f"{what}_{kind}"] = value
        elif post.get(what):
            data[what] = post[what]  # refused by the serializer with the reason
    if post.get("host"):
        data["host"] = post.get("host")
    disks = []
    if post.get("disk_pool") and post.get("disk_size_gib"):
        disks.append({"pool": post["disk_pool"], "size_gib": post["disk_size_gib"],
                      "format": post.get("disk_format", "raw")})
    if post.get("disk_volume"):
        disks.append({"volume": post["disk_volume"]})
    if post.get("cdrom"):
        data["cdrom"] = post["cdrom"]
    data["disks"] = disks
    data["nics"] = _nics(post)
    data["boot"] = ["cdrom", "hd"] if post.get("cdrom") else ["hd"]
    data["vnc"] = post.get("vnc") == "on"
    return data


def _nic_value(form: Any, choices: CreateChoices | None) -> str:
    """The network choice to show: the form's, if the host offers it, else the default."""
    if choices is None:
        return ""
    nic = form.get("nic")
    return nic if nic in choices.nic_values() else choices.default_nic


def _chosen_host(hosts: Any, value: str) -> Host | None:
    chosen = hosts.filter(pk=value).first() if value.isdigit() else None
    return chosen or suggested_host(hosts)


@permission_required("guests.add_guest", raise_exception=True)
def guest_create(request: HttpRequest) -> HttpResponse:
    """The form follows its host: choosing another host reloads the form (htmx, or the
    "Show" button without scripts) with that host's pools, networks, types and bounds."""
    errors: dict[str, Any] = {}
    if request.method == "POST":
        data = CreateGuestSerializer(data=_form_data(request.POST))
        if data.is_valid():
            try:
                guest = create(data.validated_data, user=request.user, request=request)
            except boot.BootRefused as exc:
                errors = {exc.field: [str(exc)]}
            except GuestError as exc:
                errors = {"detail": [str(exc)]}
            else:
                messages.success(request, f"Guest '{guest}' was created on {guest.host}.")
                return redirect(guest)
        else:
            errors = flat_errors(data.errors)
    form = request.POST if request.method == "POST" else request.GET
    hosts = Host.objects.exclude(state=Host.State.MAINTENANCE).order_by("name")
    host = _chosen_host(hosts, form.get("host", ""))
    choices = choices_for(host) if host else None
    return render(request, "guests/create.html", {
        "hosts": hosts, "choices": choices, "errors": errors, "post": form,
        "nic": _nic_value(form, choices),
    })


@require_POST
@permission_required("guests.change_guest", raise_exception=True)
def guest_hardware(request: HttpRequest, pk: int, change: str) -> HttpResponse:
    """vCPUs, attach/detach a disk or NIC; says whether it applied live or at next boot."""
    guest = get_object_or_404(Guest.objects.select_related("host"), pk=pk)
    post, who = request.POST, {"user": request.user, "request": request}
    try:
        if change == "vcpus":
            applied = devices.set_vcpus(guest, int(post.get("vcpus", "0")), **who)
        elif change == "attach-disk":
            volume = get_object_or_404(Volume, pk=post.get("volume") or 0)
            applied = devices.attach_volume(guest, volume, shareable=post.get("shareable") == "1",
                                            readonly=post.get("readonly") == "1", **who)
        elif change == "detach-disk":
            applied = devices.detach_disk(guest, post.get("target", ""), **who)
        elif change == "attach-nic":
            source = next(iter(_nics(post)), {})
            applied = devices.attach_nic(guest, bridge=source.get("bridge", ""),
                                         network=source.get("network", ""), **who)
        else:  # detach-nic
            applied = devices.detach_nic(guest, post.get("mac", ""), **who)
    except (GuestError, ValueError) as exc:
        messages.error(request, str(exc) if isinstance(exc, GuestError)
                       else "vCPUs must be a whole number.")
    else:
        when = "now" if applied == "live" else "at the next boot (the hypervisor cannot do it live)"
        messages.success(request, f"{guest}: change applied {when}.")
    return redirect(guest)
