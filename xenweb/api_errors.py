"""Errors the API answers outside DRF's views (an unknown URL, a server error, a malformed
query) in the API's own shape, JSON with `detail`, as its schema documents; pages keep
Django's HTML answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from hosts.virt import VirtError, VirtObjectNotFound

API_PREFIX = "/api/"


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Server error: see the appliance's log."}, status=500)
    return defaults.server_error(request)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the hypervisor's errors that a view did not turn into its own
    answer: the object is gone (404) or the host refused or failed (409), with libvirt's
    message made readable (hosts.virt.errors), never a server error."""
    if isinstance(exc, VirtObjectNotFound):
        return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, VirtError):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    return drf_exception_handler(exc, context)


class RejectNulInQueryMiddleware:
    """A NUL character cannot be stored or compared in PostgreSQL text (a server error
    there): an API query string carrying one is refused up front."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        if _is_api(request):
            for name, values in request.GET.lists():
                if "\x00" in name or any("\x00" in value for value in values):
                    return JsonResponse(
                        {"detail": f"Query parameter '{name.replace(chr(0), '')}' contains a "
                                   "NUL character."}, status=400)
        return self.get_response(request)
