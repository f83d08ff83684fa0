"""The lab's ssh command line to a Xen dom0 (lab.xen.remote) comes from the product's one
builder (hosts.virt.ssh.ssh_argv) and keeps the options it had when the lab built its own."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from hosts.virt import ssh as virt_ssh
from lab.xen.manager import XenHost
from lab.xen.remote import ssh_argv
from xenweb.appliance import sshkeys


def _options(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.fixture
def host(tmp_path: Path) -> XenHost:
    return XenHost(name="xen1", uri="xen+ssh://root@127.0.0.1:2201/system", ssh_port=2201,
                   pid=None, hostname="xenweb-xen1", host_key_fingerprint="SHA256:x",
                   root=tmp_path / "xen1", console_log=tmp_path / "console.log", running=True)


def test_lab_ssh_argv_keeps_its_options(host: XenHost, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "id_ed25519"
    monkeypatch.setattr(sshkeys, "ensure_keypair", lambda: key)
    command = ["sh", "-c", "echo 'a b' > /tmp/x"]
    argv = ssh_argv(host, command)

    assert argv[0] == virt_ssh.SSH
    assert argv[argv.index("-i") + 1] == str(key)
    assert argv[argv.index("-p") + 1] == "2201"
    assert argv[argv.index("-l") + 1] == "root"
    assert argv[-3:] == ["--", "127.0.0.1", shlex.join(command)]
    options = _options(argv)
    assert {name: options.get(name) for name in (
        "BatchMode", "StrictHostKeyChecking", "UserKnownHostsFile", "ConnectTimeout",
        "LogLevel")} == {
        "BatchMode": "yes", "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": str(host.known_hosts), "ConnectTimeout": "30",
        "LogLevel": "ERROR"}
    # The builder's own stricter settings: this key only, no global known_hosts.
    assert options["IdentitiesOnly"] == "yes"
    assert options["GlobalKnownHostsFile"] == "/dev/null"


def test_lab_ssh_argv_is_the_builders(host: XenHost, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[virt_ssh.SshLogin, str]] = []
    real = virt_ssh.ssh_argv

    def spy(login: virt_ssh.SshLogin, address: str, **kwargs: Any) -> list[str]:
        calls.append((login, address))
        return real(login, address, **kwargs)

    monkeypatch.setattr(sshkeys, "ensure_keypair", lambda: tmp_path / "key")
    monkeypatch.setattr(virt_ssh, "ssh_argv", spy)
    ssh_argv(host, ["true"])
    assert calls == [(virt_ssh.SshLogin(known_hosts=str(host.known_hosts),
                                        key=str(tmp_path / "key")), "127.0.0.1")]
