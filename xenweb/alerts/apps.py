from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "xenweb.alerts"
    label = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from xenweb.alerts import receivers  # noqa: F401
