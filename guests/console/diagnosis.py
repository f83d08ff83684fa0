"""Why a console session (text or VNC) ended or could not open, in the words the page shows:
the guest stopped, is gone, or the connection failed while it runs (libvirt is asked,
blocking)."""

from __future__ import annotations

import time

from guests.console.sessions import Ending, GuestSessionTarget, gone
from hosts.virt import VirtError, VirtObjectNotFound
from hosts.virt import domains as virt
from xenweb.ws_base import CLOSE_CONSOLE_ERROR, CLOSE_GUEST_STOPPED

SETTLE_SECONDS = 3.0  # how long an ended session waits for the guest's state to follow
RUNNING_STATES = frozenset({"running", "blocked", "paused", "pmsuspended", "shutdown"})


def _guest_state(target: GuestSessionTarget, *, settle: bool) -> str:
    """The guest's state in libvirt. With ``settle``, a running state is asked again for a
    moment: a console ends a little before a stopping guest's state changes."""
    deadline = time.monotonic() + (SETTLE_SECONDS if settle else 0.0)
    while True:
        state = virt.get_domain(target.virt_target, target.uuid).state
        if state not in RUNNING_STATES or time.monotonic() >= deadline:
            return state
        time.sleep(0.1)


def guest_ending(target: GuestSessionTarget, *, opened: bool = True) -> Ending | None:
    """None while the guest runs; otherwise why its session ended (``opened``) or its text
    console could not open: the guest is gone, stopped (not running), or libvirt failed.
    An opened session's guest is given a moment to leave a running state. Blocking."""
    try:
        state = _guest_state(target, settle=opened)
    except VirtObjectNotFound:
        return gone(target)
    except VirtError as exc:
        return Ending("error", str(exc), CLOSE_CONSOLE_ERROR)
    if state in RUNNING_STATES:
        return None
    if opened:
        return Ending("stopped", f"The guest {target.name} stopped ({state}).",
                      CLOSE_GUEST_STOPPED)
    return Ending("not-running", f"The guest {target.name} is not running ({state}); "
                  "the console opens when it starts.", CLOSE_GUEST_STOPPED)


def diagnose(target: GuestSessionTarget, detail: str) -> Ending:
    """Why a VNC session ended (or its connection failed): ``detail`` where the guest still
    runs. Blocking."""
    return guest_ending(target) or Ending("error", detail, CLOSE_CONSOLE_ERROR)
