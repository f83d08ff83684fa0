"""The lab hosts (real libvirt/QEMU), for the conversion suites that import into them."""

from tests.lab.conftest import lab_hosts  # noqa: F401
