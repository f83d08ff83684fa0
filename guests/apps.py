from django.apps import AppConfig


class GuestsConfig(AppConfig):
    name = "guests"
    verbose_name = "Guests"

    def ready(self) -> None:
        from guests.migration.recovery import connect

        connect()
