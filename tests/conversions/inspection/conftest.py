"""The tiny guest's real Debian kernel, for the inspection tests that read one."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.tinyguest import TinyGuestError, TinyGuestImage, ensure_tiny_guest


@pytest.fixture(scope="session")
def tiny_guest() -> TinyGuestImage:
    try:
        return ensure_tiny_guest()
    except TinyGuestError as exc:  # no Debian packages reachable here
        pytest.skip(f"the tiny guest cannot be built: {exc}")


@pytest.fixture(scope="session")
def real_kernel(tiny_guest: TinyGuestImage) -> Path:
    return tiny_guest.kernel
