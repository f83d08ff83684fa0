"""Slow guest actions as job bodies: clean shutdown with a timeout, save, restore."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from guests import save_images
from guests.errors import GuestError
from guests.lifecycle import check_allowed, refresh
from guests.models import Guest
from hosts.virt import VirtError
from hosts.virt import domains as virt
from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.selectors import require_target

DEFAULT_SHUTDOWN_TIMEOUT = 120
# A guest can miss one request (its kernel was still setting up the Xen watch or the ACPI
# button, or the helper it spawns failed); like Nova's clean shutdown, ask again at intervals.
SHUTDOWN_RESEND_SECONDS = 15
def _guest(job: Job) -> Guest:
    return require_target(job, Guest.objects.select_related("host"),
                          gone="The guest no longer exists.")


def _wait(guest: Guest, reporter: ProgressReporter, states: tuple[str, ...],
          timeout: float, what: str, *, resend: Callable[[], None] | None = None) -> str:
    started = time.monotonic()
    last_sent = started
    while True:
        elapsed = time.monotonic() - started
        state = virt.get_domain(guest.host.virt_target, str(guest.uuid)).state
        if state in states:
            return state
        if elapsed > timeout:
            raise JobError(f"Guest '{guest}' did not {what} within {timeout:g} s (it is {state}).")
        reporter.update(int(elapsed), total=int(timeout),
                        message=f"Waiting for '{guest}' to {what}")
        if resend is not None and time.monotonic() - last_sent >= SHUTDOWN_RESEND_SECONDS:
            resend()
            last_sent = time.monotonic()
        time.sleep(0.5)


def shutdown_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    guest = _guest(job)
    timeout = float(job.params.get("timeout", DEFAULT_SHUTDOWN_TIMEOUT))
    try:
        check_allowed(guest, "shutdown")

        def send() -> None:
            virt.shutdown(guest.host.virt_target, str(guest.uuid))
            reporter.log(f"Sent the shutdown request (ACPI / PV) to '{guest}'")

        def send_again() -> None:
            # The guest may have gone off in between: the next state check decides.
            with contextlib.suppress(VirtError):
                send()

        send()
        _wait(guest, reporter, ("shutoff",), timeout, "shut down", resend=send_again)
    except (GuestError, VirtError) as exc:
        raise JobError(
            f"{exc} Force it off if it does not react to shutdown requests."
            if "did not shut down" in str(exc) else str(exc)
        ) from exc
    return {"guest": guest.pk, "state": refresh(guest).state}


def _id(job: Job, key: str) -> int | None:
    value = job.params.get(key)
    return int(value) if value is not None else None


def save_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    """Save into a location the app chooses (guests.save_images); a ``path`` in the params
    of a job queued by an older version is ignored."""
    guest = _guest(job)
    try:
        reporter.update(0, total=1, message=f"Saving the memory of '{guest}'", force=True)
        result = save_images.save_guest(guest, _id(job, "pool"), user=job.owner,
                                        log=reporter.log)
    except (GuestError, VirtError) as exc:
        raise JobError(str(exc)) from exc
    return {**result, "state": refresh(guest).state}


def restore_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    guest = _guest(job)
    try:
        reporter.update(0, total=1, message=f"Restoring '{guest}'", force=True)
        result = save_images.restore_guest(guest, _id(job, "volume"), user=job.owner,
                                           log=reporter.log)
    except (GuestError, VirtError) as exc:
        raise JobError(str(exc)) from exc
    return {**result, "state": refresh(guest).state}


def managed_save_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    guest = _guest(job)
    try:
        check_allowed(guest, "managedsave")
        reporter.update(0, total=1, message=f"Saving '{guest}' (managed save)", force=True)
        virt.managed_save(guest.host.virt_target, str(guest.uuid))
    except (GuestError, VirtError) as exc:
        raise JobError(str(exc)) from exc
    return {"guest": guest.pk, "state": refresh(guest).state}
