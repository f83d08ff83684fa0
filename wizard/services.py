"""First-boot setup, shared by the wizard and `manage.py setup_appliance`."""

from __future__ import annotations

import zoneinfo
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.utils import timezone

from hosts.models import Host
from hosts.services import enrol_host
from hosts.virt.demo import demo_uri
from xenweb.accounts.roles import ADMIN, set_role, sync_roles
from xenweb.appliance import setup_state
from xenweb.appliance.models import ApplianceSettings, forget_settings
from xenweb.appliance.sshkeys import P2V_IDENTITY, ensure_keypair
from xenweb.appliance.token import delete_setup_token
from xenweb.audit.services import record


class SetupError(Exception):
    pass


def valid_time_zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def create_admin(username: str, password: str, email: str = "") -> Any:
    """The first administrator. Re-running an unfinished wizard replaces its password."""
    User = get_user_model()
    validate_password(password, User(username=username, email=email))
    sync_roles()
    user, _ = User.objects.get_or_create(username=username)
    user.email = email
    user.is_superuser = True
    user.is_staff = True
    user.is_active = True
    user.set_password(password)
    user.save()
    set_role(user, ADMIN)
    return user


def save_appliance_settings(*, name: str, time_zone: str) -> ApplianceSettings:
    if time_zone not in zoneinfo.available_timezones():
        raise SetupError(f"Unknown time zone '{time_zone}'.")
    settings_row = ApplianceSettings.load()
    settings_row.name = name.strip() or "xenweb"
    settings_row.time_zone = time_zone
    settings_row.save()
    forget_settings()
    return settings_row


def default_first_host() -> tuple[str, str]:
    """Name and URI the wizard offers as the first host: this machine's own hypervisor on
    the appliance (``LOCAL_HYPERVISOR``), the embedded demo host elsewhere."""
    if settings.LOCAL_HYPERVISOR:
        return "dom0", settings.LOCAL_HYPERVISOR
    return "demo", demo_uri()


def add_first_host(*, name: str, uri: str, user: Any, request: Any = None) -> Host:
    existing = Host.objects.filter(uri=uri.strip()).first()
    if existing is not None:  # a re-run of an unfinished wizard
        return existing
    return enrol_host(name=name, uri=uri, user=user, request=request)


def complete_setup(*, user: Any, request: Any = None) -> ApplianceSettings:
    with transaction.atomic():
        settings_row = ApplianceSettings.load()
        if settings_row.setup_completed_at is not None:
            raise SetupError("Setup is complete already.")
        settings_row.setup_completed_at = timezone.now()
        settings_row.save(update_fields=["setup_completed_at"])
        record("appliance.setup", user=user, request=request, target=settings_row)
    delete_setup_token()
    ensure_keypair(f"xenweb@{settings_row.name}")
    P2V_IDENTITY.private_key(f"xenweb-p2v@{settings_row.name}")
    setup_state.forget()
    forget_settings()
    return settings_row
