from __future__ import annotations

import zoneinfo
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.utils import timezone

from xenweb.appliance.models import current_settings
from xenweb.appliance.setup_state import setup_done
from xenweb.appliance.token import ensure_setup_token

OPEN_BEFORE_SETUP = ("/setup/", "/static/")


class SetupRequiredMiddleware:
    """Until first-boot setup is done, every page leads to the wizard."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if setup_done() or request.path.startswith(OPEN_BEFORE_SETUP):
            return self.get_response(request)
        ensure_setup_token()
        if request.path.startswith("/api/"):
            return JsonResponse(
                {"detail": "The appliance is not set up yet: finish the wizard at /setup/."},
                status=503,
            )
        return redirect("setup:token")


class ApplianceTimezoneMiddleware:
    """Show times in the appliance's time zone (chosen in the wizard)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if setup_done():
            name = current_settings().time_zone
            try:
                timezone.activate(zoneinfo.ZoneInfo(name))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                timezone.deactivate()
        return self.get_response(request)
