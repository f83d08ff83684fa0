class GuestError(Exception):
    """A refused or failed guest action, with a message for the user."""


class GuestGone(GuestError):
    """The guest no longer exists on its host (removed behind the app's back); the API
    answers 404."""
