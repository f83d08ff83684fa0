"""API tokens hashed at rest: `Authorization: Token <key>`, as with DRF's authtoken.

The database holds the SHA-256 of each key (ApiToken.digest), never the key: a copy of the
database or a backup gives no working token. A request's key is hashed and looked up by
its digest; the comparison is constant-time. Tokens die with a password change
(xenweb.accounts.signals).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.db import transaction
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from xenweb.accounts.models import ApiToken

KEY_BYTES = 20  # 40 hex digits, as DRF's keys: clients' header parsing stays as it was
MAX_KEY_LENGTH = 200


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_token(user: Any) -> str:
    """Replace the user's token by a new one and return its key (the only time it exists
    outside the client)."""
    key = secrets.token_hex(KEY_BYTES)
    with transaction.atomic():
        ApiToken.objects.filter(user=user).delete()
        ApiToken.objects.create(user=user, digest=digest(key))
    return key


def delete_tokens(user: Any) -> int:
    deleted, _ = ApiToken.objects.filter(user=user).delete()
    return deleted


def user_for_key(key: str) -> Any | None:
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    wanted = digest(key)
    token = ApiToken.objects.select_related("user").filter(digest=wanted).first()
    if token is None or not secrets.compare_digest(token.digest, wanted):
        return None
    return token.user


class HashedTokenAuthentication(TokenAuthentication):
    """DRF's token header and 401 challenge (`WWW-Authenticate: Token`), hashed lookup."""

    keyword = "Token"

    def authenticate_credentials(self, key: str) -> tuple[Any, None]:
        user = user_for_key(key)
        if user is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, None
