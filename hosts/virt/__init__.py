"""The only package of the project that talks to libvirt.

Everything else calls the functions exported here with a ``VirtTarget`` (the host's URI
and transport policy), gets plain dataclasses back and sees only the ``VirtError`` family
of exceptions.
"""

from .connection import HostProbe, close_all, describe_error, drop_connection, probe
from .demo import DEMO_NODE_FILE, demo_uri
from .errors import (
    HostAuthError,
    HostDriverError,
    HostUnreachable,
    VirtError,
    VirtObjectNotFound,
    VirtOperationError,
)
from .host_uri import HostUri, parse_uri
from .target import VirtTarget
from .uri import validate_uri

__all__ = [
    "DEMO_NODE_FILE",
    "HostAuthError",
    "HostDriverError",
    "HostProbe",
    "HostUnreachable",
    "HostUri",
    "VirtError",
    "VirtObjectNotFound",
    "VirtOperationError",
    "VirtTarget",
    "close_all",
    "demo_uri",
    "describe_error",
    "drop_connection",
    "parse_uri",
    "probe",
    "validate_uri",
]
