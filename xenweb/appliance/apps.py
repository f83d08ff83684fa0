from django.apps import AppConfig


class ApplianceConfig(AppConfig):
    name = "xenweb.appliance"
    label = "appliance"
    verbose_name = "Appliance"
