"""The lab hosts (real libvirt/QEMU) and the live processes, for the storage suites."""

from tests.lab.conftest import lab_hosts  # noqa: F401
