from django.apps import AppConfig


class GuestsConfig(AppConfig):
    name = "guests"
    verbose_name = "Guests"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from guests.attachments import on_guest_saved
        from guests.migration.recovery import connect
        from guests.models import Guest

        connect()
        post_save.connect(on_guest_saved, sender=Guest, dispatch_uid="guests.attachments")
