"""The lab hosts (real libvirt/QEMU) for the guest suites that need them."""

from tests.lab.conftest import lab_hosts  # noqa: F401
