"""Signals other apps use to clean up after a job that ended abnormally."""

from django.dispatch import Signal

# Sent with ``job`` when a job is marked interrupted (its worker died or lost it): the app
# that owns the job's kind puts what it left half-done in order.
job_interrupted = Signal()

# Sent with ``job`` when a job ends failed or interrupted (alerts listen).
job_failed = Signal()
