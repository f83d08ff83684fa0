"""A password change revokes the user's API token, whoever changes it and however: the
profile form, an administrator's reset, `manage.py changepassword`, the API, the shell.

All of them go through `set_password()`, which keeps the new raw password on the instance
(`_password`) until `save()`; Django's own rehash of a password at login clears it before
saving, so a rehash (same password, new hasher settings) does not count as a change.
`set_unusable_password()` (the account locked) counts too.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.hashers import is_password_usable

from xenweb.accounts.tokens import delete_tokens
from xenweb.audit.services import record


def _password_changes(user: Any) -> bool:
    if user.pk is None:
        return False
    if getattr(user, "_password", None) is not None:
        return True
    if is_password_usable(user.password):
        return False
    stored = type(user).objects.filter(pk=user.pk).values_list("password", flat=True).first()
    return stored is not None and stored != user.password


def revoke_tokens_on_password_change(sender: Any, instance: Any, update_fields: Any = None,
                                     **kwargs: Any) -> None:
    if update_fields is not None and "password" not in update_fields:
        return
    if _password_changes(instance) and delete_tokens(instance):
        record("token.revoke", user=instance, target=instance, reason="password changed")
