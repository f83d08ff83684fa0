from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from xenweb.alerts.services import open_count


def alerts(request: HttpRequest) -> dict[str, Any]:
    """The navigation's bell: how many alerts wait for acknowledgement."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.has_perm("alerts.view_alert"):
        return {}
    return {"alerts_open": open_count(user)}
