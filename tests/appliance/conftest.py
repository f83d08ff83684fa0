"""The appliance image booted under QEMU (TCG) for the whole test session, as a user meets it.

The image is built once (``lab.appliance.image``, cached outside the clone like the dom0
image) and booted from a fresh overlay: SeaBIOS, the image's GRUB, Debian's stock Xen, first
boot. A failed boot is retried once; the machine is always stopped at the end.

Part of ``make test`` wherever the machine can (root, QEMU, debootstrap); skipped with the
reason elsewhere, or when ``XENWEB_TEST_APPLIANCE=0``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.appliance.boot import BootedAppliance, Screen
from lab.appliance.image import ApplianceImage, ensure_appliance_image
from lab.errors import LabError

logger = logging.getLogger(__name__)

ENV = "XENWEB_TEST_APPLIANCE"
# TCG on a busy 2-core machine: GRUB, Xen, dom0 and every service, emulated.
BOOT_TIMEOUT_S = 1500.0
TOOLS = ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4", "sfdisk", "ssh")
# Figures printed at the end of the run (and read by bench/bench_appliance.py's twin).
FIGURES: dict[str, str] = {}


def problems() -> list[str]:
    found = [] if os.geteuid() == 0 else ["not root (debootstrap and chroot need root)"]
    found += [f"{tool} is not installed" for tool in TOOLS if shutil.which(tool) is None]
    return found


@dataclass
class Booted:
    """The session's appliance: the machine, what its console showed at first boot, and
    how long the boot took to the wizard answering over HTTPS."""

    machine: BootedAppliance
    screen: Screen
    boot_seconds: float
    facts: dict[str, Any] = field(default_factory=dict)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("appliance figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def appliance_image() -> ApplianceImage:
    if os.environ.get(ENV) == "0":
        pytest.skip(f"the appliance boot tests are switched off ({ENV}=0)")
    found = problems()
    if found:
        pytest.skip("the appliance image cannot be built and booted here: " + "; ".join(found))
    began = time.monotonic()
    try:
        image = ensure_appliance_image()
    except LabError as exc:
        pytest.fail(f"building the appliance image failed: {exc}")
    FIGURES["image build (or cache lookup)"] = f"{time.monotonic() - began:.0f} s"
    return image


def boot_appliance(image: ApplianceImage, folder: Path, name: str) -> Booted:
    """Boots a fresh machine from the image and waits for the wizard over HTTPS; one retry
    after a failed boot (TCG on a shared machine), the machine torn down on failure."""
    from tests.appliance.https import wait_for_wizard

    errors = []
    for _attempt in range(2):
        machine = BootedAppliance(image, folder, name=name)
        try:
            machine.prepare()
            machine.start()
            screen = machine.screen(timeout=BOOT_TIMEOUT_S)
            wait_for_wizard(machine, screen, timeout=BOOT_TIMEOUT_S)
            return Booted(machine, screen, time.monotonic() - machine.started)
        except (LabError, OSError) as exc:
            logger.warning("the appliance %s did not boot: %s", name, exc)
            errors.append(str(exc))
            machine.remove()
        except BaseException:  # a test timeout, ^C: the machine goes too
            machine.remove()
            raise
    pytest.fail(f"the appliance {name} did not boot (twice):\n" + "\n---\n".join(errors))


# Package scope: the machine (3 GiB, two emulated CPUs) goes when tests/appliance is done,
# not at the end of the whole run.
@pytest.fixture(scope="package")
def appliance(appliance_image: ApplianceImage, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Booted]:
    folder = tmp_path_factory.mktemp("appliance1")
    booted = boot_appliance(appliance_image, folder, "appliance1")
    FIGURES["boot to the wizard over HTTPS (TCG)"] = f"{booted.boot_seconds:.0f} s"
    try:
        yield booted
    finally:
        booted.machine.remove()
