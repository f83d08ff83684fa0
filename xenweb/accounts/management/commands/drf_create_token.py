"""`manage.py drf_create_token USER`: a new API token for the user, printed once.

Same name, arguments and output as DRF's authtoken command, which this replaces: keys are
stored hashed, so an existing key cannot be shown again; every call makes a new one (the
old one stops working), with or without `--reset`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from xenweb.accounts.services import issue_token


class Command(BaseCommand):
    help = "Create a new API token for a user (replacing any old one) and print it once."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username", type=str)
        parser.add_argument("-r", "--reset", action="store_true", dest="reset", default=False,
                            help="accepted for DRF compatibility: a new token is always made")

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["username"]
        user = get_user_model()._default_manager.filter(
            **{get_user_model().USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"Cannot create the Token: user {username} does not exist")
        key = issue_token(user=user)
        self.stdout.write(f"Generated token {key} for user {username}")
