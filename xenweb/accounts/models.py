# Accounts use Django's own User and Group models; roles are groups (see roles.py).
from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A user's API token, stored as the SHA-256 of its key only (xenweb.accounts.tokens).

    The key is 160 random bits, so a fast hash is enough: there is nothing to guess. The
    key itself is shown once, when it is made, and is nowhere on the appliance after."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="api_token")
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"API token of {self.user}"
