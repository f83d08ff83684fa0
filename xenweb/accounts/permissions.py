"""API permission: authenticated, and the role's model permission for the action."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

METHOD_CODENAMES = {"POST": "add", "PUT": "change", "PATCH": "change", "DELETE": "delete"}


def required_permission(request: Any, view: Any) -> str | None:
    """The permission a request needs, or None where being logged in is enough.

    A view may name one per action in `action_permissions`; otherwise the model's
    view/add/change/delete permission follows from the HTTP method.
    """
    action_permissions: dict[str, str] = getattr(view, "action_permissions", {})
    action = getattr(view, "action", None)
    if action in action_permissions:
        return action_permissions[action]
    queryset = getattr(view, "queryset", None)
    if queryset is None:
        return None if request.method in SAFE_METHODS else "auth.change_user"
    meta = queryset.model._meta
    codename = "view" if request.method in SAFE_METHODS else METHOD_CODENAMES.get(request.method)
    if codename is None:
        return None
    return f"{meta.app_label}.{codename}_{meta.model_name}"


class RolePermission(BasePermission):
    message = "Your role does not allow this action."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        perm = required_permission(request, view)
        return perm is None or user.has_perm(perm)
