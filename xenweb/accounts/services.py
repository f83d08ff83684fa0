"""Users, roles and API tokens."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from xenweb.accounts.roles import ADMIN, role_of, set_role
from xenweb.audit.services import record


class AccountError(Exception):
    pass


def create_user(*, actor: Any, role: str, password: str, request: Any = None, **fields: Any) -> Any:
    user = get_user_model()(**fields)
    user.set_password(password)
    user.save()
    set_role(user, role)
    record("user.create", user=actor, request=request, target=user, role=role)
    return user


def update_user(*, actor: Any, user: Any, role: str, request: Any = None) -> Any:
    if user == actor and (role != ADMIN or not user.is_active):
        raise AccountError("You cannot remove your own administrator role or deactivate yourself.")
    if user.is_superuser and role != ADMIN:
        user.is_superuser = False
    user.save()
    set_role(user, role)
    record("user.update", user=actor, request=request, target=user, role=role,
           active=user.is_active)
    return user


def set_password(*, actor: Any, user: Any, request: Any = None) -> None:
    """Called after a password form saved; logs who changed whose password."""
    record("user.password", user=actor, request=request, target=user)


def issue_token(*, user: Any, request: Any = None) -> str:
    """Create (or replace) the user's API token and return its key."""
    Token.objects.filter(user=user).delete()
    token = Token.objects.create(user=user)
    record("token.create", user=user, request=request, target=user)
    return token.key


def revoke_token(*, user: Any, request: Any = None) -> bool:
    deleted, _ = Token.objects.filter(user=user).delete()
    if deleted:
        record("token.revoke", user=user, request=request, target=user)
    return bool(deleted)


def describe(user: Any) -> dict[str, Any]:
    return {"role": role_of(user), "has_token": Token.objects.filter(user=user).exists()}
