"""The host an adapter call talks to: its libvirt URI and the transport policy."""

from __future__ import annotations

from dataclasses import dataclass

from .uri import validate_uri

__all__ = ["VirtTarget"]


@dataclass(frozen=True, slots=True)
class VirtTarget:
    """A libvirt host as every adapter function takes it.

    ``uri`` is the connection URI as the user enrolled it. ``allow_insecure`` is the
    transport policy: whether the URI may use a transport that neither authenticates
    the host nor encrypts (``xen+tcp://``, ``qemu+tcp://``) or parameters that turn those
    checks off (``no_verify``, ``known_hosts_verify`` other than ``normal``). Off unless
    the host allows it (``Host.allow_insecure_transport``, lab hosts only).

    Nothing is checked when a target is made: ``checked_uri()`` validates the URI
    against the policy when the adapter is about to connect.
    """

    uri: str
    allow_insecure: bool = False

    def checked_uri(self) -> str:
        """The URI validated against the policy (``validate_uri``), scheme lower-cased.

        Raises ``HostDriverError`` saying what is wrong.
        """
        return validate_uri(self.uri, allow_insecure=self.allow_insecure)
