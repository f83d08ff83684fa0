from django.apps import AppConfig


class ConversionsConfig(AppConfig):
    name = "conversions"
    label = "conversions"
    verbose_name = "Conversions"
