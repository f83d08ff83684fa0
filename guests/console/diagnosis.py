"""Why a VNC session ended, in the words the page shows: the guest stopped, is gone, or the
connection failed while it runs (libvirt is asked, blocking)."""

from __future__ import annotations

import time

from guests.console.sessions import Ending, GuestSessionTarget
from hosts.virt import VirtError, VirtObjectNotFound
from hosts.virt import domains as virt
from xenweb.ws_base import CLOSE_CONSOLE_ERROR, CLOSE_GUEST_STOPPED, CLOSE_NO_CONSOLE

SETTLE_SECONDS = 3.0  # how long an ended session waits for the guest's state to follow
RUNNING_STATES = frozenset({"running", "blocked", "paused", "pmsuspended", "shutdown"})


def diagnose(target: GuestSessionTarget, detail: str) -> Ending:
    """Why a session ended (or its connection failed): asks libvirt for the guest's state,
    a running state again for a moment (the VNC server goes a little before the state
    changes). Blocking."""
    deadline = time.monotonic() + SETTLE_SECONDS
    try:
        while True:
            state = virt.get_domain(target.virt_target, target.uuid).state
            if state not in RUNNING_STATES or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    except VirtObjectNotFound:
        return Ending("gone", f"The guest {target.name} no longer exists on "
                      f"{target.host_name}.", CLOSE_NO_CONSOLE)
    except VirtError as exc:
        return Ending("error", str(exc), CLOSE_CONSOLE_ERROR)
    if state not in RUNNING_STATES:
        return Ending("stopped", f"The guest {target.name} stopped ({state}).",
                      CLOSE_GUEST_STOPPED)
    return Ending("error", detail, CLOSE_CONSOLE_ERROR)
