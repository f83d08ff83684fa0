"""The three roles, as Django groups with permissions.

admin: everything (users, hosts, audit); operator: guests, storage and jobs, hosts
read-only; viewer: read-only.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.db.models import Q

ADMIN, OPERATOR, VIEWER = "admin", "operator", "viewer"
ROLE_NAMES = (ADMIN, OPERATOR, VIEWER)
ROLE_CHOICES = [
    (ADMIN, "Administrator: everything, including users and hosts"),
    (OPERATOR, "Operator: guests, storage and jobs"),
    (VIEWER, "Viewer: read-only"),
]

VIEWABLE_APPS = ("hosts", "guests", "storage", "jobs", "alerts")
OPERATED_APPS = ("guests", "storage", "jobs", "alerts")
# Permissions of the operated apps that stay the administrators' (other users' jobs; where
# alerts are sent).
ADMIN_ONLY = {"jobs": ("view_all_jobs", "cancel_any_job"),
              "alerts": ("view_alertroute", "add_alertroute", "change_alertroute",
                         "delete_alertroute")}


def permissions_for(role: str) -> Any:
    perms = Permission.objects.all()
    if role == ADMIN:
        return perms
    viewable = Q(content_type__app_label__in=VIEWABLE_APPS, codename__startswith="view_")
    admin_only = Q()
    for app_label, codenames in ADMIN_ONLY.items():
        admin_only |= Q(content_type__app_label=app_label, codename__in=codenames)
    if role == OPERATOR:
        return perms.filter(viewable | Q(content_type__app_label__in=OPERATED_APPS)) \
            .exclude(admin_only)
    if role == VIEWER:
        return perms.filter(viewable).exclude(admin_only)
    raise ValueError(f"unknown role {role!r}")


def sync_roles() -> None:
    for role in ROLE_NAMES:
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(permissions_for(role))


def sync_roles_after_migrate(sender: Any, **kwargs: Any) -> None:
    """After the last app's post_migrate, when every app's permissions exist."""
    if sender.label == list(apps.get_app_configs())[-1].label:
        sync_roles()


def role_of(user: Any) -> str | None:
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return ADMIN
    names = set(user.groups.values_list("name", flat=True))
    return next((role for role in ROLE_NAMES if role in names), None)


def set_role(user: Any, role: str) -> None:
    if role not in ROLE_NAMES:
        raise ValueError(f"unknown role {role!r}")
    user.groups.remove(*Group.objects.filter(name__in=ROLE_NAMES))
    user.groups.add(Group.objects.get(name=role))
