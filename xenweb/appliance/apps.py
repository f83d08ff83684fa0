from django.apps import AppConfig


class ApplianceConfig(AppConfig):
    name = "xenweb.appliance"
    label = "appliance"
    verbose_name = "Appliance"

    def ready(self) -> None:
        from hosts.virt.ssh import use_dom0_login
        from xenweb.appliance import checks  # noqa: F401 (registers the system checks)
        from xenweb.appliance.sshkeys import dom0_login

        # The adapter logs in to dom0s with the appliance's key, never importing the core.
        use_dom0_login(dom0_login)
