"""Real Xen 4.17 dom0s (Debian 12 under QEMU/TCG) for the whole test session.

``xen1`` and ``xen2`` (booted in parallel; only xen1 with ``XENWEB_TEST_XEN_PAIR=0``) live in the
test data dir's lab (``<data dir>/lab/xen``): booted once (a failed boot is retried once after a
clean stop), always stopped at the end. Skipped only where the machine cannot run them (not
root, QEMU or debootstrap missing) or with ``XENWEB_TEST_XEN=0``.

The two-host tests (``test_xen_pair.py``: the storage network, NFS between the dom0s and
migration) need the second dom0; ``XENWEB_TEST_XEN_PAIR=0`` leaves it out where a second TCG
dom0 costs too much. ``XENWEB_TEST_XEN_KEEP=1`` leaves the dom0s running at the end, for
the next run to reuse (``python -m lab down`` stops them).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client

from lab.errors import LabError
from lab.xen.manager import XenHost, preflight_problems, xen_down, xen_up
from tests.live.processes import WebServer
from tests.xen.diagnostics import cannot_create_domains, dom0_report
from tests.xen.helpers import console_until

logger = logging.getLogger(__name__)

# TCG is slow, and slower still on a busy machine: the first boot may also build the dom0
# image (a few minutes).
BOOT_TIMEOUT_S = 900.0
PAIR_ENV = "XENWEB_TEST_XEN_PAIR"
# While working on the suite: leave the dom0s running at the end (the next run reuses them).
KEEP_ENV = "XENWEB_TEST_XEN_KEEP"


def pair_enabled() -> bool:
    return os.environ.get(PAIR_ENV, "1") != "0"


def _start(count: int) -> list[XenHost]:
    try:
        return xen_up(count, timeout=BOOT_TIMEOUT_S)
    except LabError as first:
        logger.warning("Xen hosts did not boot, retrying once: %s", first)
        xen_down()
        try:
            return xen_up(count, timeout=BOOT_TIMEOUT_S)
        except LabError as second:
            pytest.fail(f"the Xen hosts did not boot (twice).\nfirst: {first}\n"
                        f"second: {second}")


XEN_ENV = "XENWEB_TEST_XEN"
# A test on the TCG-emulated dom0s runs again after a failure (twice at most): under
# emulation on a 2-core machine an SSH session to a dom0 is now and then lost (README, "Real
# Xen in the lab"; one rerun in two CI runs of 2026-12-06); a failure that is the
# product's repeats.
RERUNS = 2


def _uses_xen(item: pytest.Item) -> bool:
    return "xen_hosts" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_xen(item):
            item.add_marker(pytest.mark.flaky(reruns=RERUNS, reruns_delay=5))


# The dom0s of this session (what ``xen_hosts`` yields; a restart replaces them in place).
_BOOTED: list[XenHost] = []
# A dom0 that broke fails every test after it (each run three times): the first few failed
# tries carry the dom0s' state, the rest would only add minutes of SSH to a hung dom0.
_REPORTS_LEFT = [6]
# Why the dom0s are to be restarted before the next Xen test (empty: they work).
_RESTART_WANTED: list[str] = []
# Under TCG a dom0 has now and then stopped creating any domain for the rest of the run
# (CI, 2026-12-06: every later start "libxenlight failed to create new domain"). After a
# failed test a canary domain tells a broken dom0 from a failing test; a broken dom0 is
# restarted (at most this often per session) before the test's rerun.
_RESTARTS_LEFT = [2]
# Every failed try of a Xen test with what the dom0s said, printed at the end of the run
# even when the rerun passed (pytest shows a rerun's report nowhere).
_FAILED_TRIES: list[str] = []
CRASH_TEXT_LIMIT = 2000


def _crash_text(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text[:CRASH_TEXT_LIMIT]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (report.when == "call" and report.failed and _uses_xen(item)):
        return
    parts = [f"{item.nodeid}: {_crash_text(report)}"]
    if _REPORTS_LEFT[0] > 0:
        _REPORTS_LEFT[0] -= 1
        parts += [dom0_report(host) for host in _BOOTED]
    if _RESTARTS_LEFT[0] > 0 and not _RESTART_WANTED:
        broken = [f"{host.name}: {why}" for host in _BOOTED
                  if (why := cannot_create_domains(host))]
        _RESTART_WANTED.extend(broken)
        parts.append("the canary: " + ("; ".join(broken) + " (the dom0s are restarted)"
                                       if broken else "every dom0 creates domains"))
    _FAILED_TRIES.append("\n".join(parts))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FAILED_TRIES:
        terminalreporter.section("failed tries of Xen dom0 tests")
        for text in _FAILED_TRIES:
            terminalreporter.write_line(text)
            terminalreporter.write_line("")


def _restart_dom0s() -> None:
    _RESTARTS_LEFT[0] -= 1
    logger.warning("restarting the Xen dom0s: %s", "; ".join(_RESTART_WANTED))
    _RESTART_WANTED.clear()
    count = len(_BOOTED)
    xen_down()
    _BOOTED[:] = _start(count)


@pytest.fixture(autouse=True)
def _dom0s_that_create_domains(request: pytest.FixtureRequest) -> None:
    if _RESTART_WANTED and _BOOTED and _uses_xen(request.node):
        _restart_dom0s()


@pytest.fixture(scope="session")
def xen_hosts() -> Iterator[list[XenHost]]:
    if os.environ.get(XEN_ENV) == "0":
        pytest.skip(f"the real-Xen dom0 tests are off ({XEN_ENV}=0)")
    problems = preflight_problems()
    if problems:
        pytest.skip("Xen lab hosts cannot run on this machine: " + "; ".join(problems))
    try:
        began = time.monotonic()
        _BOOTED[:] = _start(2 if pair_enabled() else 1)
        logger.warning("Xen hosts %s ready in %.0f s", [h.uri for h in _BOOTED],
                       time.monotonic() - began)
        yield _BOOTED
    finally:
        _BOOTED.clear()
        if os.environ.get(KEEP_ENV, "") != "1":
            xen_down()


# Function-scoped: a restarted dom0 is a new XenHost.
@pytest.fixture
def xen_host(xen_hosts: list[XenHost]) -> XenHost:
    return xen_hosts[0]


@pytest.fixture
def xen_pair(xen_hosts: list[XenHost]) -> list[XenHost]:
    if len(xen_hosts) < 2:
        pytest.skip(f"two-host Xen tests are off ({PAIR_ENV}=0)")
    return xen_hosts


@pytest.fixture
def console(web_server: WebServer, admin_client_tx: Client) -> Callable[..., str]:
    """``console(guest, *needles, timeout=…)``: the guest's console read through the browser's
    websocket until one of the needles shows (``helpers.console_until``)."""
    return functools.partial(console_until, web_server, admin_client_tx)
