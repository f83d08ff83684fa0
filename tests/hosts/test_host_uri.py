"""hosts.virt.host_uri: the one parser of host URIs (driver, transport, host, port, user,
parameters), for every kind of URI the appliance enrols."""

from __future__ import annotations

import dataclasses

import pytest

from hosts.virt import HostUri, parse_uri
from hosts.virt.host_uri import SSH_PORT


def test_ssh_uri_with_user_port_and_parameters() -> None:
    uri = parse_uri("xen+ssh://admin@xen1.example.com:2222/system"
                    "?keyfile=/k/id&known_hosts=/k/kh&known_hosts_verify=normal")
    assert uri == HostUri(
        scheme="xen+ssh", hostname="xen1.example.com", port=2222, user="admin",
        netloc="admin@xen1.example.com:2222", path="/system",
        params=(("keyfile", "/k/id"), ("known_hosts", "/k/kh"),
                ("known_hosts_verify", "normal")),
    )
    assert (uri.driver, uri.transport, uri.ssh_port) == ("xen", "ssh", 2222)
    assert uri.param("keyfile") == "/k/id" and uri.param("known_hosts") == "/k/kh"
    assert uri.param("sshauth") is None


def test_defaults_when_the_uri_names_no_user_or_port() -> None:
    uri = parse_uri("qemu+ssh://xen2.example.com/system")
    assert (uri.user, uri.port, uri.ssh_port) == ("", None, SSH_PORT)
    assert uri.params == ()


@pytest.mark.parametrize(("text", "driver", "transport", "hostname", "port"), [
    ("xen+tls://xen1.example.com/system", "xen", "tls", "xen1.example.com", None),
    ("qemu+tls://kvm.example.com:16514/system", "qemu", "tls", "kvm.example.com", 16514),
    ("qemu+tcp://127.0.0.1:16600/system", "qemu", "tcp", "127.0.0.1", 16600),
    ("xen+tcp://192.0.2.7/system", "xen", "tcp", "192.0.2.7", None),
    ("xen:///system", "xen", "", "", None),
    ("xen:///", "xen", "", "", None),
    ("qemu:///session", "qemu", "", "", None),
    ("test:///default", "test", "", "", None),
    ("test:///var/lib/xenweb/node.xml", "test", "", "", None),
])
def test_drivers_and_transports(text: str, driver: str, transport: str, hostname: str,
                                port: int | None) -> None:
    uri = parse_uri(text)
    assert (uri.driver, uri.transport, uri.hostname, uri.port) == (driver, transport,
                                                                   hostname, port)


def test_local_and_test_driver_paths() -> None:
    assert parse_uri("test:///default").path == "/default"
    node = parse_uri("test:///var/lib/xenweb/node.xml")
    assert (node.netloc, node.path) == ("", "/var/lib/xenweb/node.xml")
    assert parse_uri("xen:///system").netloc == ""


def test_ipv6_literals() -> None:
    uri = parse_uri("xen+ssh://root@[2001:DB8::7]:2200/system")
    assert uri.hostname == "2001:db8::7"  # no brackets, lower case
    assert (uri.port, uri.user) == (2200, "root")
    assert uri.netloc == "root@[2001:DB8::7]:2200"  # as written
    assert parse_uri("qemu+tcp://[::1]/system").hostname == "::1"


def test_scheme_and_host_name_are_lower_case() -> None:
    uri = parse_uri("XEN+SSH://Root@Xen1.Example.COM/system")
    assert (uri.scheme, uri.driver, uri.transport) == ("xen+ssh", "xen", "ssh")
    assert uri.hostname == "xen1.example.com"
    assert uri.user == "Root"  # user names are case-sensitive


def test_parameters() -> None:
    uri = parse_uri("qemu+ssh://h/system?no_tty=&keyfile=/a&keyfile=/b&known_hosts=/kh%20x")
    assert uri.param("no_tty") == ""  # given, empty
    assert uri.param("keyfile") == "/b"  # the last one wins
    assert uri.param("known_hosts") == "/kh x"  # decoded
    assert [key for key, _ in uri.params] == ["no_tty", "keyfile", "keyfile", "known_hosts"]


@pytest.mark.parametrize("text", [
    "xen+ssh://[2001:db8::7/system",  # unbalanced bracket
    "xen+ssh://h:99999/system",  # port out of range
    "xen+ssh://h:ssh/system",  # port not a number
])
def test_unparsable_uris_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_uri(text)


def test_a_parsed_uri_is_frozen() -> None:
    uri = parse_uri("xen:///system")
    with pytest.raises(dataclasses.FrozenInstanceError):
        uri.hostname = "elsewhere"  # type: ignore[misc]
