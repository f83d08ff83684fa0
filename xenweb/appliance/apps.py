from django.apps import AppConfig


class ApplianceConfig(AppConfig):
    name = "xenweb.appliance"
    label = "appliance"
    verbose_name = "Appliance"

    def ready(self) -> None:
        from xenweb.appliance import checks  # noqa: F401 (registers the system checks)
