"""A real Xen 4.17 dom0 (Debian 12 under QEMU/TCG) for the whole test session.

One host, ``xen1``, in the test data dir's lab (``<data dir>/lab/xen``): booted once (a failed
boot is retried once after a clean stop), always stopped at the end. Skipped only where the
machine cannot run it (not root, QEMU or debootstrap missing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from hosts.lab.errors import LabError
from hosts.lab.xen.manager import XenHost, preflight_problems, xen_down, xen_up

logger = logging.getLogger(__name__)

# TCG is slow: the first boot may also build the dom0 image (about a minute).
BOOT_TIMEOUT_S = 360.0


def _start() -> XenHost:
    try:
        return xen_up(1, timeout=BOOT_TIMEOUT_S)[0]
    except LabError as first:
        logger.warning("Xen host did not boot, retrying once: %s", first)
        xen_down()
        try:
            return xen_up(1, timeout=BOOT_TIMEOUT_S)[0]
        except LabError as second:
            pytest.fail(f"the Xen host did not boot (twice).\nfirst: {first}\nsecond: {second}")


@pytest.fixture(scope="session")
def xen_host() -> Iterator[XenHost]:
    problems = preflight_problems()
    if problems:
        pytest.skip("Xen lab hosts cannot run on this machine: " + "; ".join(problems))
    try:
        began = time.monotonic()
        host = _start()
        logger.warning("Xen host %s ready in %.0f s", host.uri, time.monotonic() - began)
        yield host
    finally:
        xen_down()
