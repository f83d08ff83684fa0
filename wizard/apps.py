from django.apps import AppConfig


class WizardConfig(AppConfig):
    """The first-boot set-up wizard and `manage.py setup_appliance`: above the apps, since
    finishing set-up enrols the first host."""

    name = "wizard"
    verbose_name = "Set-up wizard"
