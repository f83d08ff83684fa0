"""Recording audit entries. Every mutating action calls `record` once."""

from __future__ import annotations

from typing import Any

from django.db import models as dj_models
from django.http import HttpRequest

from xenweb.audit.models import AuditRecord


def _client_addr(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def record(
    action: str,
    *,
    user: Any = None,
    request: HttpRequest | None = None,
    target: dj_models.Model | None = None,
    target_type: str = "",
    target_id: str | int = "",
    target_label: str = "",
    result: str = AuditRecord.Result.OK,
    message: str = "",
    **detail: Any,
) -> AuditRecord:
    if user is None and request is not None:
        user = getattr(request, "user", None)
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or target.pk
        target_label = target_label or str(target)
    return AuditRecord.objects.create(
        user=user,
        username=user.get_username() if user else "",
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        target_label=target_label[:255],
        result=result,
        message=message,
        detail=detail,
        remote_addr=_client_addr(request),
    )
