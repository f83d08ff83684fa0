"""Real libvirt/QEMU hosts for the lab tests: two lab hosts per test session.

The hosts live in the test data dir's lab (``var/test/lab``), so they never touch
an appliance's own lab. They are skipped only where the machine cannot run them
(not root, no namespaces, libvirtd or QEMU missing).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from lab import preflight
from lab.daemons import LabError, LabHost, lab_down, lab_up

logger = logging.getLogger(__name__)

LAB_HOSTS = 2


def _start() -> list[LabHost]:
    """``lab_up`` with one retry after a clean ``lab_down``."""
    try:
        return lab_up(LAB_HOSTS)
    except LabError as first:
        logger.warning("lab up failed, retrying once: %s", first)
        lab_down()
        try:
            return lab_up(LAB_HOSTS)
        except LabError as second:
            pytest.fail(f"the lab did not start (twice).\nfirst: {first}\nsecond: {second}")


@pytest.fixture(scope="session")
def lab_hosts() -> Iterator[list[LabHost]]:
    """Hosts ``lab1`` and ``lab2``, running for the whole session, stopped at its end."""
    problems = preflight.problems()
    if problems:
        pytest.skip("lab hosts cannot run on this machine: " + "; ".join(problems))
    try:
        hosts = {host.name: host for host in _start()}
        yield [hosts[f"lab{index}"] for index in range(1, LAB_HOSTS + 1)]
    finally:
        lab_down()
