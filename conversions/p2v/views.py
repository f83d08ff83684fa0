"""The P2V page: connect (fingerprint shown), preview the inventory, choose, start.

Thin: the same functions as the API (inventory, start_p2v); the job page shows progress.
An optional login password is used for the one request that carries it: the page never
sends it back, so the start form asks for it again (nothing keeps it in between).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters

from conversions.p2v import job as p2v_job
from conversions.p2v.address import checked, parse_address
from conversions.p2v.api import PERMISSION
from conversions.p2v.inventory import propose, read_inventory
from conversions.p2v.ssh import IDENTITY, P2VError, Secret, Source, check_password, confirm_host_key
from hosts.models import Host
from storage.models import Pool
from xenweb.audit.services import record


def _source(post: Any) -> Source:
    address = parse_address(post.get("address", ""))
    try:
        port = int(post.get("port") or 22)
    except ValueError:
        raise P2VError("The port is a number.") from None
    if not 1 <= port <= 65535:
        raise P2VError("The port is a number from 1 to 65535.")
    username = post.get("username", "root").strip() or "root"
    if not username.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise P2VError("Not a user name.")
    return Source(address=address, port=port, username=username,
                  password=_password(post.get("password", "")))


def _password(password: str) -> Secret | None:
    if not password:
        return None
    problem = check_password(password)
    if problem:
        raise P2VError(problem)
    return Secret(password)


def _start(request: HttpRequest, source: Source) -> HttpResponse:
    post = request.POST
    host = Host.objects.filter(pk=post.get("host") or 0).first()
    pool = Pool.objects.filter(pk=post.get("pool") or 0).first()
    if host is None or pool is None:
        raise P2VError("Choose the target host and pool.")
    wanted = p2v_job.Request(
        source=source, fingerprint=post.get("fingerprint", ""), disks=post.getlist("disks"),
        host=host, pool=pool, name=post.get("name", "").strip(),
        network=post.get("network", "default").strip() or "default",
        keep_macs=post.get("keep_macs") == "on", format=post.get("format") or "raw")
    job = p2v_job.start_p2v(wanted, user=request.user, http_request=request)
    return redirect("jobs:detail", job.pk)


@sensitive_post_parameters("password")
@permission_required(PERMISSION, raise_exception=True)
def p2v_page(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {"public_key": IDENTITY.public_key(), "post": request.POST,
                               "pools": Pool.objects.select_related("host").order_by(
                                   "host__name", "name")}
    if request.method == "POST":
        try:
            source = _source(request.POST)
            if request.POST.get("step") == "start":
                return _start(request, source)
            source = checked(source)  # before any connection
            fingerprint = confirm_host_key(source, None)
            inventory = read_inventory(source)
            record("p2v.inventory", user=request.user, request=request, target_type="p2v",
                   target_label=source.label, fingerprint=fingerprint,
                   login="key" if source.password is None else "password")
            context.update(fingerprint=fingerprint, inventory=inventory,
                           proposal=propose(inventory), source=source,
                           with_password=source.password is not None)
        except P2VError as exc:
            context["error"] = str(exc)
    return render(request, "conversions/p2v.html", context)
