"""Users, roles and API tokens."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from xenweb.accounts.models import ApiToken
from xenweb.accounts.roles import ADMIN, role_of, set_role
from xenweb.accounts.tokens import create_token, delete_tokens
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
    """Called after a password form saved; logs who changed whose password. (The user's
    API token is revoked by the save itself: xenweb.accounts.signals.)"""
    record("user.password", user=actor, request=request, target=user)


def issue_token(*, user: Any, request: Any = None) -> str:
    """Create (or replace) the user's API token and return its key: the only time the key
    exists on the appliance (only its hash is stored)."""
    key = create_token(user)
    record("token.create", user=user, request=request, target=user)
    return key


def revoke_token(*, user: Any, request: Any = None) -> bool:
    deleted = delete_tokens(user)
    if deleted:
        record("token.revoke", user=user, request=request, target=user)
    return bool(deleted)


def describe(user: Any) -> dict[str, Any]:
    return {"role": role_of(user), "has_token": ApiToken.objects.filter(user=user).exists()}
