"""The xenweb appliance image (``make appliance``) and booting it under QEMU for tests."""
