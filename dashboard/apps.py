from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The start page: counts and live state read from every app."""

    name = "dashboard"
    verbose_name = "Dashboard"
