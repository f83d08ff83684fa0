class JobError(Exception):
    """A job-related refusal with a message meant for the user."""


class JobCancelled(Exception):
    """Raised inside a task when the user asked to cancel it."""


class JobRefused(JobError):
    """The job cannot start (another job holds the target, bad parameters...)."""
