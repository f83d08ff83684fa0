from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_save


class AccountsConfig(AppConfig):
    name = "xenweb.accounts"
    label = "accounts"
    verbose_name = "Accounts and roles"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model

        from xenweb.accounts.roles import sync_roles_after_migrate
        from xenweb.accounts.signals import revoke_tokens_on_password_change

        post_migrate.connect(sync_roles_after_migrate, dispatch_uid="xenweb-sync-roles")
        pre_save.connect(revoke_tokens_on_password_change, sender=get_user_model(),
                         dispatch_uid="xenweb-revoke-tokens-on-password-change")
