from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command

from hosts.models import Host
from hosts.virt.demo import demo_uri
from inventory.monitor import refresh_host

pytestmark = pytest.mark.django_db


def test_unreachable_host_gets_the_error_then_comes_back(tmp_path: Any) -> None:
    host = Host.objects.create(name="h", uri=f"test://{tmp_path}/gone.xml")
    assert refresh_host(host)
    assert host.state == Host.State.UNREACHABLE and host.last_error
    since = host.state_since
    assert not refresh_host(host)  # still unreachable: no change, same "since"
    assert host.state_since == since
    host.uri = demo_uri()
    assert refresh_host(host)
    assert host.state == Host.State.ONLINE and host.last_error == ""
    assert host.cpus == 16 and host.memory_mib > 0


def test_maintenance_survives_a_probe() -> None:
    host = Host.objects.create(name="m", uri=demo_uri(), state=Host.State.MAINTENANCE)
    assert not refresh_host(host)
    assert host.state == Host.State.MAINTENANCE


def test_watchhosts_once() -> None:
    Host.objects.create(name="d", uri=demo_uri())
    call_command("watchhosts", "--once")
    assert Host.objects.get(name="d").state == Host.State.ONLINE


def test_messages_name_the_host_by_its_name_not_its_address() -> None:
    host = Host.objects.create(name="rack-7", uri="qemu+tcp://127.0.0.1:1/system",
                               allow_insecure_transport=True)
    refresh_host(host)
    assert host.state == Host.State.UNREACHABLE
    assert "host 'rack-7'" in host.last_error and "127.0.0.1" not in host.last_error, \
        host.last_error
