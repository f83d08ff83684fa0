"""Logins, logouts and failed logins are audited too."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from xenweb.audit.services import record


@receiver(user_logged_in)
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record("user.login", user=user, request=request, target=user)


@receiver(user_logged_out)
def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        record("user.logout", user=user, request=request, target=user)


@receiver(user_login_failed)
def _login_failed(sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
    record(
        "user.login",
        request=request,
        target_type="auth.user",
        target_label=str(credentials.get("username", ""))[:150],
        result="failed",
        message="wrong user name or password",
    )
