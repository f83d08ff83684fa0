from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"
    verbose_name = "Storage"

    def ready(self) -> None:
        from hosts.signals import host_page
        from storage.bootfiles_views import host_page_context
        from storage.content import connect

        connect()
        host_page.connect(host_page_context, dispatch_uid="storage.bootfiles_views")
