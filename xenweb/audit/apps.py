from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "xenweb.audit"
    label = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from xenweb.audit import signals  # noqa: F401
