"""Is first-boot setup done? Asked on every request, so the answer is cached per process
once it is yes (setup is never undone)."""

from __future__ import annotations

from django.db import DatabaseError

from xenweb.appliance.models import ApplianceSettings

_done = False


def setup_done() -> bool:
    global _done
    if _done:
        return True
    try:
        _done = ApplianceSettings.objects.filter(pk=1, setup_completed_at__isnull=False).exists()
    except DatabaseError:  # not migrated yet
        return False
    return _done


def forget() -> None:
    """Drop the cached answer (tests reset the database between cases)."""
    global _done
    _done = False
