"""Process-wide libvirt set-up: quiet error reporting and the event loop.

libvirt prints every error to stderr unless an error handler is registered,
and it only sends keepalive messages on remote connections when an event loop
implementation is registered *before* the connection is opened and something
keeps running it. Both are process-global, so they live here, set up once.
"""

from __future__ import annotations

import logging
import os
import threading

import libvirt

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_event_impl_registered = False
_loop_thread: threading.Thread | None = None


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """Swallow libvirt's own error printing; errors still raise libvirtError."""


def silence_libvirt_errors() -> None:
    """Stop libvirt from writing its errors to stderr."""
    libvirt.registerErrorHandler(_ignore_libvirt_error, None)


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError:  # pragma: no cover - only on broken libvirt
            logger.exception("libvirt event loop iteration failed")


def ensure_event_loop() -> None:
    """Register libvirt's default event loop once and run it in a daemon thread.

    Needed for keepalive on remote connections (and later for domain events).
    Safe to call many times and from many threads.
    """
    global _event_impl_registered, _loop_thread
    with _lock:
        if not _event_impl_registered:
            libvirt.virEventRegisterDefaultImpl()
            _event_impl_registered = True
        if _loop_thread is None or not _loop_thread.is_alive():
            _loop_thread = threading.Thread(
                target=_run_event_loop, name="libvirt-event-loop", daemon=True
            )
            _loop_thread.start()


def _after_fork_in_child() -> None:
    # Threads do not survive fork(): forget the loop thread (the registration
    # itself stays valid) so the next connection starts a fresh one.
    global _lock, _loop_thread
    _lock = threading.Lock()
    _loop_thread = None


silence_libvirt_errors()
os.register_at_fork(after_in_child=_after_fork_in_child)
