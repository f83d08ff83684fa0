"""hosts.virt.ssh: the dom0 identity as the adapter holds it (given by the appliance core at
start-up, never imported from it) and the one ssh command line builder."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from hosts.virt import parse_uri
from hosts.virt import ssh as virt_ssh
from hosts.virt.connection import _libvirt_uri
from hosts.virt.ssh import SshLogin, dom0_login, host_login, ssh_argv
from xenweb.appliance.sshkeys import DOM0_IDENTITY, DOM0_TRUST, P2V_IDENTITY, P2V_TRUST

LOGIN = SshLogin(known_hosts="/data/ssh/known_hosts", key="/data/ssh/id_ed25519")


def test_argv_logs_in_with_the_given_key_only_and_checks_the_host_key_strictly() -> None:
    argv = ssh_argv(LOGIN, "xen1.example.com", user="root", port=2222,
                    options=["-o", "BatchMode=yes"], command=["uptime"])
    assert argv == [
        "/usr/bin/ssh", "-i", "/data/ssh/id_ed25519", "-o", "IdentitiesOnly=yes",
        "-o", "UserKnownHostsFile=/data/ssh/known_hosts", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        "-p", "2222", "-l", "root", "--", "xen1.example.com", "uptime",
    ]


def test_argv_without_a_key_adds_none() -> None:
    argv = ssh_argv(SshLogin(known_hosts="/p2v/known_hosts"), "198.51.100.7", user="u",
                    port=22)
    assert "-i" not in argv and "IdentitiesOnly=yes" not in argv
    assert "UserKnownHostsFile=/p2v/known_hosts" in argv and "StrictHostKeyChecking=yes" in argv
    assert not any(str(DOM0_IDENTITY.private_key()) in arg for arg in argv)
    assert not any(str(DOM0_TRUST.path()) in arg for arg in argv)
    assert argv[-4:] == ["-l", "u", "--", "198.51.100.7"]


def test_argv_never_runs_without_a_known_hosts_file() -> None:
    with pytest.raises(ValueError, match="known_hosts"):
        ssh_argv(SshLogin(known_hosts="", key="/k"), "h", user="root", port=22)


def test_a_host_name_that_looks_like_an_option_stays_a_host_name() -> None:
    argv = ssh_argv(LOGIN, "-oProxyCommand=touch /tmp/x", user="root", port=22)
    assert argv[-2:] == ["--", "-oProxyCommand=touch /tmp/x"]


def test_the_dom0_identity_is_the_appliances() -> None:
    """Set when Django started (xenweb.appliance's app config): the dom0 key and pins,
    never P2V's."""
    login = dom0_login()
    assert login == SshLogin(known_hosts=str(DOM0_TRUST.path()),
                             key=str(DOM0_IDENTITY.private_key()))
    assert login.key != str(P2V_IDENTITY.private_key())
    assert login.known_hosts != str(P2V_TRUST.path())


def test_without_the_core_there_is_no_dom0_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(virt_ssh, "_dom0_login", None)
    with pytest.raises(RuntimeError, match="No dom0 SSH identity"):
        dom0_login()
    monkeypatch.setattr(virt_ssh, "_dom0_login", lambda: SshLogin(known_hosts="/kh"))
    with pytest.raises(RuntimeError, match="no key"):
        dom0_login()


def test_host_login_lets_the_uri_choose_its_key_and_known_hosts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(virt_ssh, "dom0_login", lambda: LOGIN)
    assert host_login(parse_uri("xen+ssh://h/system")) == LOGIN
    assert host_login(parse_uri("xen+ssh://h/system?keyfile=/k/id")) == SshLogin(
        known_hosts="/data/ssh/known_hosts", key="/k/id")
    assert host_login(parse_uri("xen+ssh://h/system?known_hosts=/k/kh&keyfile=/k/id")) == \
        SshLogin(known_hosts="/k/kh", key="/k/id")


def test_libvirt_gets_the_dom0_identity_for_ssh_uris() -> None:
    uri = _libvirt_uri("xen+ssh://root@xen1.example.com:2222/system")
    parts = urlsplit(uri)
    assert parts.scheme == "xen+libssh" and parts.netloc == "root@xen1.example.com:2222"
    assert parts.path == "/system"
    assert dict(parse_qsl(parts.query)) == {
        "keyfile": str(DOM0_IDENTITY.private_key()),
        "known_hosts": str(DOM0_TRUST.path()),
        "known_hosts_verify": "normal",
        "sshauth": "privkey",
    }
    given = _libvirt_uri("qemu+ssh://h/system?keyfile=/etc/k&no_tty=1")
    assert dict(parse_qsl(urlsplit(given).query))["keyfile"] == "/etc/k"
    assert "no_tty" not in given
    ipv6 = urlsplit(_libvirt_uri("xen+ssh://root@[2001:db8::7]/system"))
    assert ipv6.netloc == "root@[2001:db8::7]" and ipv6.hostname == "2001:db8::7"
    assert _libvirt_uri("qemu+tcp://h/system") == "qemu+tcp://h/system"
    assert _libvirt_uri("xen+tls://h/system") == "xen+tls://h/system"
    assert _libvirt_uri("test:///default") == "test:///default"
