"""Signals the apps above hosts use to follow what happens to hosts."""

from django.dispatch import Signal

# Sent with ``host`` right after a host is enrolled (its row committed), before enrol_host
# returns: the inventory reads the host's capabilities, guests and pools then, so the
# enrolment's answer shows them. A receiver may raise VirtError: the host stays enrolled
# and the error becomes its last_error (the watcher and the periodic reconcile retry).
host_enrolled = Signal()

# Sent with ``host`` when the host's page is rendered; each receiver returns a dict of
# template context to add: what the apps above hosts show there (storage: the boot files).
host_page = Signal()
