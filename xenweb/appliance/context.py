from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from xenweb.accounts.roles import role_of
from xenweb.appliance.models import current_settings
from xenweb.appliance.setup_state import setup_done


def appliance(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    return {
        "appliance_name": current_settings().name if setup_done() else "xenweb",
        "user_role": role_of(user) if user is not None else None,
    }
