"""The one error of a guest conversion."""


class ConversionFailed(Exception):
    """The converted copy could not be changed as the target needs; the message says why."""
