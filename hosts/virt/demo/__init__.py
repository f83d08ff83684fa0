"""A demo Xen host for libvirt's mock ``test`` driver (no hypervisor needed)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

DEMO_NODE_FILE: Path = (Path(__file__).parent / "xen-demo-host.xml").resolve()

#: Guests in the demo node file and the state each starts in.
DEMO_GUEST_STATES: dict[str, str] = {
    "Domain-0": "running",
    "web01": "running",
    "db01": "running",
    "mail01": "shutoff",
    "fw-external": "running",
    "fw-internal": "running",
    "build01": "paused",
    "win2019": "running",
}


def demo_uri() -> str:
    """``test:///abs/path/xen-demo-host.xml``: libvirt opens the URI's path as the node file."""
    return "test://" + quote(DEMO_NODE_FILE.as_posix(), safe="/")


def is_private_mock(uri: str) -> bool:
    """A test-driver host read from a node file: every connection gets its own copy, so
    only one process (the web server) may drive it, and nothing else sees its changes."""
    return uri.startswith("test:///") and uri != "test:///default"
