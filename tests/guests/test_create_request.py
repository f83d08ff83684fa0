"""The plain check of a guest request (what P2V calls) and CreateGuestSerializer (what the
API and the wizard call) accept the same requests with the same defaults and refuse the
same ones."""

from __future__ import annotations

from typing import Any

import pytest

from guests.create_request import CreateGuestSerializer, RequestRefused, checked_request

ACCEPTED: list[dict[str, Any]] = [
    {"name": "web", "memory_mib": 256},
    {"name": "p2v-of-db", "host": 3, "type": "hvm", "vcpus": 4, "memory_mib": 4096,
     "nics": [{"network": "default", "mac": "00:50:56:AA:bb:01"}, {"network": "lan"}],
     "vnc": True, "description": "P2V of db (Debian 12)"},
    {"name": "pv1", "type": "pv", "memory_mib": 512, "max_memory_mib": 1024, "vcpus": 2,
     "max_vcpus": 4, "kernel_file": "vmlinuz", "initrd_file": "initrd.img",
     "cmdline": "root=/dev/xvda1", "disks": [{"pool": 1, "size_gib": 1.5},
                                             {"volume": 7}, {"iso": 8}],
     "nics": [{"bridge": "xenbr0"}], "boot": ["cdrom", "hd"], "cdrom": 9,
     "labels": ["dmz"], "firmware": "bios", "bootloader": "pygrub"},
    {"name": "vol", "memory_mib": 64, "kernel_volume": 5, "initrd_volume": None,
     "kernel": "", "type": "pvh"},
]

REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"memory_mib": 256}, "name"),
    ({"name": "<script>", "memory_mib": 256}, "name"),
    ({"name": "x" * 65, "memory_mib": 256}, "name"),
    ({"name": "web"}, "memory_mib"),
    ({"name": "web", "memory_mib": 8}, "memory_mib"),
    ({"name": "web", "memory_mib": 256, "vcpus": 0}, "vcpus"),
    ({"name": "web", "memory_mib": 256, "vcpus": 513}, "vcpus"),
    ({"name": "web", "memory_mib": 256, "type": "kvm"}, "type"),
    ({"name": "web", "memory_mib": 256, "host": None}, "host"),
    ({"name": "web", "memory_mib": 256, "kernel": "/boot/vmlinuz"}, "kernel"),
    ({"name": "web", "memory_mib": 256, "initrd_file": "../etc/shadow"}, "initrd_file"),
    ({"name": "web", "memory_mib": 256, "description": "x" * 1001}, "description"),
    ({"name": "web", "memory_mib": 256, "boot": ["floppy"]}, "boot"),
    ({"name": "web", "memory_mib": 256, "disks": [{"pool": 1}]}, "disks"),
    ({"name": "web", "memory_mib": 256, "disks": [{"pool": 1, "volume": 2,
                                                   "size_gib": 1}]}, "disks"),
    ({"name": "web", "memory_mib": 256, "nics": [{}]}, "nics"),
    ({"name": "web", "memory_mib": 256, "nics": [{"network": "a b"}]}, "nics"),
    ({"name": "web", "memory_mib": 256, "nics": [{"bridge": "br0", "mac": "00:16:3e"}]},
     "nics"),
    ({"name": "web", "memory_mib": 256, "labels": ["x" * 65]}, "labels"),
]


@pytest.mark.parametrize("data", ACCEPTED)
def test_accepted_alike_with_the_same_defaults(data: dict[str, Any]) -> None:
    serializer = CreateGuestSerializer(data=data)
    assert serializer.is_valid(), serializer.errors
    expected = {key: [dict(item) for item in value] if key in ("disks", "nics") else value
                for key, value in serializer.validated_data.items()}
    assert checked_request(data) == expected


@pytest.mark.parametrize(("data", "field"), REFUSED)
def test_refused_alike(data: dict[str, Any], field: str) -> None:
    serializer = CreateGuestSerializer(data=data)
    assert not serializer.is_valid()
    assert field in serializer.errors
    with pytest.raises(RequestRefused) as refused:
        checked_request(data)
    assert refused.value.field.split("[")[0].split(".")[0] == field
    assert str(refused.value)
