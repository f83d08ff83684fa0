class GuestError(Exception):
    """A refused or failed guest action, with a message for the user."""
