"""SSH from the appliance: the identity it logs in to enrolled hosts (dom0s) with, and the
``ssh`` command line.

The dom0 identity is the appliance's management key and the known_hosts file holding the
dom0s' pinned host keys. The appliance core makes both (``xenweb.appliance.sshkeys``
generates the key on first use and pins the host keys) and hands them to the adapter when
Django starts (``use_dom0_login``), so nothing in ``hosts.virt`` reaches up into the core.
Whatever logs in to an enrolled host takes them from here: libvirt's libssh transport
(``hosts.virt.connection``) and the VNC tunnel (``guests.console.route``), through ``host_login``.

``ssh_argv`` builds a command line for any login and adds no key and no known_hosts file
it was not given: P2V (``storage.p2v.ssh``) builds its command lines with its own identity
and trust store and never names the dom0 ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .host_uri import HostUri

SSH = "/usr/bin/ssh"


@dataclass(frozen=True)
class SshLogin:
    """What ssh logs in with and what it trusts: the private key (None: none, e.g. for a
    password login) and the known_hosts file the server's key must be pinned in."""

    known_hosts: str
    key: str | None = None


_dom0_login: Callable[[], SshLogin] | None = None


def use_dom0_login(provider: Callable[[], SshLogin]) -> None:
    """Where the dom0 identity comes from (the appliance sets it once, at start-up); asked
    at each use, so the key pair is made only when something logs in to a dom0."""
    global _dom0_login
    _dom0_login = provider


def dom0_login() -> SshLogin:
    """The appliance's management key and the dom0s' pinned host keys."""
    if _dom0_login is None:
        raise RuntimeError("No dom0 SSH identity: the appliance sets it when Django starts "
                           "(xenweb.appliance's app config).")
    login = _dom0_login()
    if not login.key:
        raise RuntimeError("The dom0 SSH identity has no key.")
    return login


def host_login(uri: HostUri) -> SshLogin:
    """The login for the enrolled host reached over ``uri``: the dom0 identity, except
    where the URI names its own ``keyfile`` or ``known_hosts`` (the user's word wins, as it
    does for libvirt)."""
    dom0 = dom0_login()
    return SshLogin(known_hosts=uri.param("known_hosts") or dom0.known_hosts,
                    key=uri.param("keyfile") or dom0.key)


def ssh_argv(login: SshLogin, host: str, *, user: str, port: int,
             options: Sequence[str] = (), command: Sequence[str] = ()) -> list[str]:
    """The ``ssh`` command line logging in to ``host`` as ``user`` with ``login`` only
    (its key and no other: IdentitiesOnly) and checking the host key strictly against
    ``login.known_hosts`` only (no global file, an unknown or changed key is refused).
    ``options`` are the caller's (``-o`` settings, ``-W``...); ``command`` comes last."""
    if not login.known_hosts:
        raise ValueError("ssh needs a known_hosts file to check the host key against")
    argv = [SSH]
    if login.key:
        argv += ["-i", login.key, "-o", "IdentitiesOnly=yes"]
    argv += ["-o", f"UserKnownHostsFile={login.known_hosts}",
             "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
             *options, "-p", str(port), "-l", user, "--", host, *command]
    return argv
