from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "xenweb.jobs"
    label = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        from xenweb.jobs import worker_signals  # noqa: F401
