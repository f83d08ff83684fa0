from __future__ import annotations

import time

from django.db import models


class ApplianceSettings(models.Model):
    """The appliance's own settings: one row, written by the first-boot wizard."""

    name = models.CharField(max_length=100, default="xenweb")
    time_zone = models.CharField(max_length=64, default="UTC")
    setup_completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "appliance settings"
        verbose_name_plural = "appliance settings"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def load(cls) -> ApplianceSettings:
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


_cache: tuple[float, ApplianceSettings] | None = None
CACHE_SECONDS = 10.0


def current_settings() -> ApplianceSettings:
    """The settings row, cached briefly: it is read on every request."""
    global _cache
    now = time.monotonic()
    if _cache is None or now - _cache[0] > CACHE_SECONDS:
        _cache = (now, ApplianceSettings.load())
    return _cache[1]


def forget_settings() -> None:
    global _cache
    _cache = None
