"""The first-boot wizard: token → administrator → appliance → first host → done."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from hosts.services import HostError, test_connection
from hosts.virt import VirtError, VirtTarget
from wizard import services
from wizard.forms import AdminForm, ApplianceForm, HostForm, TokenForm
from xenweb.appliance.setup_state import setup_done
from xenweb.appliance.throttle import ThrottleUnavailable, reset, take_attempt
from xenweb.appliance.token import check_setup_token, ensure_setup_token
from xenweb.audit.services import record

STEPS = [("token", "Setup token"), ("admin", "Administrator"), ("appliance", "Appliance"),
         ("host", "First host")]
# At most this many tokens are checked per address in the window (counted atomically
# before each check: xenweb.appliance.throttle); a right one resets the count.
MAX_TOKEN_FAILURES = 10
TOKEN_LOCKOUT_SECONDS = 15 * 60


def wizard_step(step: str) -> Callable:
    """Open only before setup is done, and only after the steps before this one."""

    def decorate(view: Callable) -> Callable:
        @login_not_required
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if setup_done():
                raise Http404("Setup is complete.")
            names = [name for name, _ in STEPS]
            for name in names[: names.index(step)]:
                if not request.session.get(f"setup.{name}"):
                    return redirect(f"setup:{name}")
            # Steps after the administrator act as that (logged-in) administrator.
            if names.index(step) > names.index("admin") and not request.user.is_superuser:
                return redirect("setup:admin")
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def _render(request: HttpRequest, step: str, form: Any, **extra: Any) -> HttpResponse:
    context = {"form": form, "step": step, "steps": STEPS, **extra}
    return render(request, f"setup/{step}.html", context)


def _failure_key(request: HttpRequest) -> str:
    return f"setup-token-failures:{request.META.get('REMOTE_ADDR', '?')}"


@wizard_step("token")
def token_step(request: HttpRequest) -> HttpResponse:
    ensure_setup_token()
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        key = _failure_key(request)
        try:
            allowed = take_attempt(key, limit=MAX_TOKEN_FAILURES,
                                   window_seconds=TOKEN_LOCKOUT_SECONDS)
        except ThrottleUnavailable:
            form.add_error("token", "Tokens cannot be checked right now (Redis, which counts "
                           "the attempts, is unreachable); try again shortly.")
            return _render(request, "token", form)
        if not allowed:
            form.add_error("token", "Too many wrong tokens from your address; wait 15 minutes.")
        elif check_setup_token(form.cleaned_data["token"]):
            reset(key)
            request.session["setup.token"] = True
            return redirect("setup:admin")
        else:
            record("appliance.setup_token", request=request, result="refused",
                   message="wrong setup token")
            form.add_error("token", "That is not the setup token of this appliance.")
    return _render(request, "token", form)


@wizard_step("admin")
def admin_step(request: HttpRequest) -> HttpResponse:
    form = AdminForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user = services.create_admin(data["username"], data["password1"], data["email"])
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        request.session["setup.token"] = True
        request.session["setup.admin"] = True
        record("user.create", user=user, request=request, target=user, role="admin")
        return redirect("setup:appliance")
    return _render(request, "admin", form)


@wizard_step("appliance")
def appliance_step(request: HttpRequest) -> HttpResponse:
    form = ApplianceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.save_appliance_settings(**form.cleaned_data)
        request.session["setup.appliance"] = True
        return redirect("setup:host")
    return _render(request, "appliance", form)


@wizard_step("host")
def host_step(request: HttpRequest) -> HttpResponse:
    form = HostForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if not data["skip"]:
                services.add_first_host(
                    name=data["name"], uri=data["uri"], user=request.user, request=request
                )
        except (VirtError, HostError) as exc:
            form.add_error("uri", str(exc))
        else:
            services.complete_setup(user=request.user, request=request)
            for key in [f"setup.{name}" for name, _ in STEPS]:
                request.session.pop(key, None)
            messages.success(request, "Setup is complete. Welcome to your appliance.")
            return redirect("dashboard")
    return _render(request, "host", form)


@wizard_step("host")
@require_POST
def host_test(request: HttpRequest) -> HttpResponse:
    """The "Test connection" button (htmx): connect once and say what was found or failed."""
    uri = request.POST.get("uri", "")
    try:
        info = test_connection(VirtTarget(uri))
    except VirtError as exc:
        return render(request, "hosts/_test_result.html", {"ok": False, "error": str(exc)})
    return render(request, "hosts/_test_result.html", {"ok": True, "info": info})
