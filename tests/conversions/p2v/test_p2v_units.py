"""P2V pieces that need no SSH or hypervisor: the inventory parser fed by this machine's
own tools, the disk reader's stream format run by this machine's python3, the API's
permission and refusals, the password's way to ssh (askpass, FIFO) and to the worker
(handoff through Redis)."""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from conversions.p2v import handoff, qcow2
from conversions.p2v import inventory as inv
from conversions.p2v.reader import FLAG_ZLIB, HEADER, REGION, SCRIPT, command
from conversions.p2v.ssh import (
    ASKPASS,
    LoginRefused,
    Secret,
    Source,
    check_password,
    explain,
    login_env,
    ssh_args,
)

MIB = 1024 * 1024


def records(stream: bytes) -> list[tuple[bytes, int, int, int, bytes, bytes]]:
    found, pos = [], 0
    while pos < len(stream):
        kind, flags, offset, length, size, digest = HEADER.unpack_from(stream, pos)
        pos += HEADER.size
        payload = stream[pos:pos + size]
        pos += size
        found.append((kind, flags, offset, length, digest, payload))
    return found


def run_reader(path: Path, offset: int = 0) -> bytes:
    args = command(str(path), offset)
    return subprocess.run(["python3", *args[1:]], input=SCRIPT.encode(), capture_output=True,
                          check=True).stdout


def test_reader_sends_zero_regions_as_records_without_payload(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    data = os.urandom(MIB) + b"text " * 1000
    with open(image, "wb") as handle:
        handle.truncate(5 * MIB + 12345)
        handle.seek(2 * MIB)
        handle.write(data)
    stream = run_reader(image)
    found = records(stream)
    kinds = [record[0] for record in found]
    assert kinds == [b"Z", b"Z", b"D", b"D", b"Z", b"Z", b"E"]
    assert found[-1][2] == 5 * MIB + 12345  # where it stopped: the end
    assert found[-2][3] == 12345  # the short last region
    content = image.read_bytes()
    for kind, flags, offset, length, digest, payload in found[:-1]:
        region = content[offset:offset + length]
        assert hashlib.sha256(region).digest() == digest
        if kind == b"D":
            assert (zlib.decompress(payload) if flags & FLAG_ZLIB else payload) == region
    assert found[2][1] == 0 and found[3][1] == FLAG_ZLIB  # random: raw; text: compressed
    assert len(stream) < 2 * MIB + 10 * HEADER.size  # zeros cost a header each, no bytes
    resumed = records(run_reader(image, offset=3 * MIB))
    assert [record[2] for record in resumed] == [3 * MIB, 4 * MIB, 5 * MIB,
                                                 5 * MIB + 12345]
    assert REGION == MIB


def test_reader_stops_sampling_incompressible_data_but_not_regions_with_zero_packets(
        tmp_path: Path) -> None:
    """After a region that does not compress, the next ones are sent without trying;
    a region holding a zero packet is still compressed (it stays sparse on the volume),
    and compressible data after a pause is compressed again once sampled."""
    packet = 256 * 1024
    text = b"text " * (MIB // 5) + b"t"
    regions = [os.urandom(MIB), os.urandom(MIB),
               os.urandom(3 * packet) + bytes(packet),  # a zero packet: compressed
               os.urandom(MIB), os.urandom(MIB), os.urandom(MIB), text, text, text]
    image = tmp_path / "disk.img"
    image.write_bytes(b"".join(regions))
    found = records(run_reader(image))
    # Not sampled: the 2nd (one after a miss), the 5th (one after a miss) and, after two
    # misses in a row, the 7th and 8th; the 9th is sampled and compressed again.
    assert [record[1] for record in found[:-1]] == [0, 0, FLAG_ZLIB, 0, 0, 0, 0, 0, FLAG_ZLIB]
    for record, region in zip(found, regions, strict=False):
        _kind, flag, _offset, _length, digest, payload = record
        assert hashlib.sha256(region).digest() == digest
        assert (zlib.decompress(payload) if flag & FLAG_ZLIB else payload) == region


def test_reader_sends_what_it_read_before_a_short_read(tmp_path: Path) -> None:
    """The device shrinks under the reader: the regions before the short read arrive, with
    their checksums, and the reader says where it failed."""
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(2 * MIB))
    args = command(str(image), 0, 3 * MIB)  # asks for more than there is: size is re-read
    script = SCRIPT.replace("size = os.lseek(fd, 0, os.SEEK_END)", "size = 3 * 1048576")
    done = subprocess.run(["python3", *args[1:]], input=script.encode(), capture_output=True,
                          check=False)
    assert done.returncode == 3
    assert b"short read at 2097152" in done.stderr
    found = records(done.stdout)
    assert [(record[0], record[2]) for record in found] == [(b"D", 0), (b"D", MIB)]


def test_inventory_of_this_machine_parses() -> None:
    output = subprocess.run(["sh", "-s"], input=inv.SCRIPT.encode(), capture_output=True,
                            check=True).stdout.decode()
    found = inv.parse(output)
    assert found.cpu.count == os.cpu_count()
    assert found.cpu.vendor and found.cpu.model
    assert found.memory_bytes > 64 * MIB
    assert found.firmware in ("bios", "uefi")
    assert found.hostname == os.uname().nodename
    assert found.root == (os.getuid() == 0) and "python3" in found.tools
    assert all(disk.size > 0 for disk in found.disks)
    assert all(len(nic.mac) == 17 for nic in found.nics)
    proposal = inv.propose(found)
    assert proposal["type"] == "hvm" and proposal["vcpus"] == found.cpu.count
    assert proposal["memory_mib"] == max(256, found.memory_bytes // MIB)


def test_inventory_parsers() -> None:
    cpu = inv.parse_cpu("processor : 0\nvendor_id : GenuineIntel\nmodel name : Xeon\n"
                        "flags : fpu pae lm vmx\n\nprocessor : 1\nflags : fpu\n")
    assert (cpu.count, cpu.vendor, cpu.model, cpu.lm, cpu.pae, cpu.vmx, cpu.svm) == \
        (2, "GenuineIntel", "Xeon", True, True, True, False)
    lsblk = ('{"blockdevices": [{"name": "sda", "path": "/dev/sda", "type": "disk", '
             '"size": 1000204886016, "model": "WDC WD10 ", "pttype": "gpt", "rm": false, '
             '"ro": false, "mountpoints": [null], "children": [{"name": "sda1", '
             '"path": "/dev/sda1", "size": 536870912, "fstype": "vfat", "mountpoints": '
             '["/boot/efi"]}]}, {"name": "sr0", "type": "rom", "size": 1024}]}')
    disks = inv.parse_disks(lsblk, "")
    assert [disk.path for disk in disks] == ["/dev/sda"]
    assert disks[0].model == "WDC WD10" and disks[0].in_use
    assert disks[0].partitions[0].fstype == "vfat"
    parted = inv.parse_disks('{"blockdevices": [{"name": "loop3", "type": "loop", '
                             '"size": 1048576}]}', "", "/dev/loop3 1 2048 30720 ext4\n")
    assert parted[0].partitions[0].path == "/dev/loop3p1"
    assert parted[0].partitions[0].size == 30720 * 512
    nics = inv.parse_nics('[{"ifname": "lo", "link_type": "loopback", "address": "00:00:00:00:'
                          '00:00"}, {"ifname": "eno1", "link_type": "ether", "address": '
                          '"AA:BB:CC:00:11:22", "operstate": "UP", "mtu": 1500}]')
    assert [(nic.name, nic.mac, nic.state) for nic in nics] == [("eno1", "aa:bb:cc:00:11:22",
                                                                   "UP")]
    busy = inv.warnings(inv.Inventory("h", "Debian", "debian", cpu, 1, "bios", disks, nics,
                                      [], False))
    assert any("python3" in note for note in busy)
    assert any("/dev/sda is mounted" in note for note in busy)


@pytest.mark.django_db
def test_p2v_api_needs_the_operator_role(viewer_client: Client, operator_client: Client) -> None:
    body: dict[str, Any] = {"address": "127.0.0.1", "port": 1}
    assert viewer_client.post("/api/v1/p2v/inventory/", body,
                              content_type="application/json").status_code == 403
    assert viewer_client.post("/api/v1/p2v/", body,
                              content_type="application/json").status_code == 403
    with_password = operator_client.post("/api/v1/p2v/inventory/",
                                         {**body, "password": "secret"},
                                         content_type="application/json")
    # The appliance's own address is refused before any connection (test_p2v_identity.py).
    assert with_password.status_code == 400
    assert "this appliance itself" in with_password.json()["detail"]
    two_lines = operator_client.post("/api/v1/p2v/inventory/", {**body, "password": "a\nb"},
                                     content_type="application/json")
    assert two_lines.status_code == 400 and "line break" in two_lines.json()["password"][0]
    bad = operator_client.post("/api/v1/p2v/inventory/", {"address": "-oProxyCommand=x"},
                               content_type="application/json")
    assert bad.status_code == 400 and "address" in bad.json()
    closed = operator_client.post("/api/v1/p2v/inventory/", body,
                                  content_type="application/json")
    assert closed.status_code == 400 and "this appliance itself" in closed.json()["detail"]


@pytest.mark.django_db
def test_p2v_is_in_the_openapi_schema(admin_client: Client) -> None:
    schema = admin_client.get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    assert "/api/v1/p2v/inventory/" in schema and "/api/v1/p2v/" in schema
    assert "host_key_fingerprint" in schema


PASSWORD = "p2v-Pw 7f3a $HOME 'q' \\ ;ü"


def askpass(env: dict[str, str] | None, prompt: str = "root@10.0.0.9's password: ") -> \
        subprocess.CompletedProcess[bytes]:
    """Run the askpass helper as ssh does: the prompt as its argument, the answer on stdout."""
    return subprocess.run([str(ASKPASS), prompt], env=env, capture_output=True, check=False)


def test_askpass_gives_the_password_once_and_only_for_a_password_prompt() -> None:
    source = Source("10.0.0.9", password=Secret(PASSWORD), connect_to="10.0.0.9")
    with login_env(source) as env:
        assert env is not None and env["SSH_ASKPASS_REQUIRE"] == "force"
        assert PASSWORD not in repr(env) and PASSWORD not in repr(source)
        folder = Path(env["XENWEB_ASKPASS_FIFO"]).parent
        assert folder.stat().st_mode & 0o777 == 0o700
        assert askpass(env, "Are you sure you want to continue connecting?").returncode == 1
        given = askpass(env)
        assert given.returncode == 0 and given.stdout == PASSWORD.encode() + b"\n"
        again = askpass(env)  # taken: nothing left, no waiting
        assert again.returncode == 1 and again.stdout == b""
    assert not folder.exists()
    assert askpass(env).returncode == 1  # after the block the FIFO is gone
    with login_env(Source("10.0.0.9")) as key_login:
        assert key_login is None


def test_ssh_arguments_never_hold_the_password() -> None:
    args = ssh_args(Source("10.0.0.9", password=Secret(PASSWORD), connect_to="10.0.0.9"),
                    ["true"])
    assert not any(PASSWORD in arg for arg in args)
    assert "PubkeyAuthentication=no" in args and "PreferredAuthentications=password" in args
    assert "BatchMode=no" in args and "NumberOfPasswordPrompts=1" in args
    assert "StrictHostKeyChecking=yes" in args and "-i" not in args
    key = ssh_args(Source("10.0.0.9", connect_to="10.0.0.9"), ["true"])
    assert "BatchMode=yes" in key and "-i" in key and "PubkeyAuthentication=no" not in key


def test_a_secret_never_shows() -> None:
    secret = Secret(PASSWORD)
    assert PASSWORD not in repr(secret) and PASSWORD not in str(secret)
    assert PASSWORD not in f"{secret}" and secret.reveal() == PASSWORD
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert check_password("fine, with spaces ") is None
    assert check_password("x" * 1001) and check_password("a\rb") and check_password("a\0b")


def test_refusals_say_which_login_failed() -> None:
    password = Source("10.0.0.9", password=Secret(PASSWORD))
    denied = "root@10.0.0.9: Permission denied (publickey,password).\n"
    wrong = explain(password, 255, denied)
    assert isinstance(wrong, LoginRefused)
    assert str(wrong) == "The source refused the password for root@10.0.0.9:22."
    keys_only = explain(password, 255, "root@10.0.0.9: Permission denied (publickey).\n")
    assert "does not accept password logins (it offers: publickey)" in str(keys_only)
    key = explain(Source("10.0.0.9"), 255, denied)
    assert isinstance(key, LoginRefused) and "refused the appliance's P2V key" in str(key)


def test_handoff_seals_the_password_for_one_job_and_one_take(settings: Any) -> None:
    sealed = handoff.seal(Secret(PASSWORD), "job-a")
    assert PASSWORD.encode() not in sealed
    assert handoff.unseal(sealed, "job-a").reveal() == PASSWORD
    with pytest.raises(handoff.HandoffError, match="SECRET_KEY"):
        handoff.unseal(sealed, "job-b")  # bound to its job
    handoff.hand_over(Secret(PASSWORD), "unit-test-handoff")
    with handoff._client() as client:
        assert 0 < client.ttl(handoff.redis_key("unit-test-handoff")) <= settings.P2V_PASSWORD_TTL
        assert PASSWORD.encode() not in client.get(handoff.redis_key("unit-test-handoff"))
    assert handoff.take("unit-test-handoff").reveal() == PASSWORD
    with pytest.raises(handoff.HandoffError, match="is gone"):
        handoff.take("unit-test-handoff")


def test_handoff_without_redis_says_so(settings: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    settings.P2V_PASSWORD_REDIS_URL = f"redis://127.0.0.1:{port}/0"
    with pytest.raises(handoff.HandoffError, match="Redis is unreachable"):
        handoff.hand_over(Secret(PASSWORD), "no-redis")
    with pytest.raises(handoff.HandoffError, match="Redis is unreachable"):
        handoff.take("no-redis")


@pytest.mark.django_db
def test_a_failed_handoff_leaves_no_job(settings: Any, demo: Any, admin_user: Any) -> None:
    from conversions.p2v import job as p2v_job
    from storage.models import Pool
    from xenweb.jobs.models import Job

    settings.P2V_PASSWORD_REDIS_URL = "redis://127.0.0.1:1/0"
    pool = Pool.objects.get(host=demo, name="default")
    request = p2v_job.Request(source=Source("10.0.0.9", password=Secret(PASSWORD)),
                              fingerprint="SHA256:x", disks=["/dev/sda"], host=demo, pool=pool,
                              name="p2v-unit")
    params = p2v_job._params(request, [{"device": "/dev/sda", "size": MIB}])
    assert params["login"] == "password" and PASSWORD not in repr(params)
    with pytest.raises(handoff.HandoffError):
        p2v_job._create_job(request, params, MIB, user=admin_user, http_request=None,
                            enqueue=False)
    assert not Job.objects.exists()


# --- qcow2 guest view ----------------------------------------------------------------------

QEMU_IMG = "/usr/bin/qemu-img"


def local_read(path: Path) -> qcow2.Read:
    """``read(offset, length)`` over a local file, in uneven chunks as a stream gives them."""
    def read(offset: int, length: int) -> Iterator[bytes]:
        with open(path, "rb") as handle:
            handle.seek(offset)
            while length > 0:
                chunk = handle.read(min(length, 300_001))
                if not chunk:
                    return
                length -= len(chunk)
                yield chunk
    return read


def raw_image(path: Path, size: int) -> bytes:
    """Data, text, a run of zeros written as data, and holes: what a disk copy holds."""
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, data in ((0, os.urandom(70_000)), (3 * MIB + 4096, b"text " * 50_000),
                             (6 * MIB, bytes(MIB)), (size - 1000, os.urandom(1000))):
            handle.seek(offset)
            handle.write(data)
    return path.read_bytes()


def converted(raw: Path, *options: str) -> Path:
    out = raw.with_suffix(".qcow2")
    subprocess.run([QEMU_IMG, "convert", "-q", "-f", "raw", "-O", "qcow2", *options, str(raw),
                    str(out)], check=True, capture_output=True)
    return out


@pytest.mark.parametrize("options", [(), ("-o", "compat=0.10"), ("-o", "cluster_size=4096"),
                                     ("-o", "cluster_size=2M")])
def test_qcow2_guest_view_equals_the_raw_image(tmp_path: Path, options: tuple[str, ...]) -> \
        None:
    size = 10 * MIB + 3 * 512  # not a whole number of clusters
    expected = raw_image(tmp_path / "disk.img", size)
    image = converted(tmp_path / "disk.img", *options)
    seen = b"".join(qcow2.guest_chunks(local_read(image), size))
    assert len(seen) == size and seen == expected
    layout = qcow2.parse_header(image.read_bytes()[:104])
    runs = qcow2.extents(local_read(image), layout)
    assert sum(extent.length for extent in runs) == size
    assert len(runs) < 12  # neighbouring clusters are read in one go


def test_qcow2_zero_clusters_and_the_wrong_size(tmp_path: Path) -> None:
    image = tmp_path / "zero.qcow2"
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata",
                    str(image), "4M"], check=True, capture_output=True)
    subprocess.run(["/usr/bin/qemu-io", "-f", "qcow2", "-c", "write -P 7 0 1M",
                    "-c", "write -z 64k 128k", str(image)], check=True, capture_output=True)
    expected = bytes([7]) * (64 * 1024) + bytes(128 * 1024) + bytes([7]) * (832 * 1024) + \
        bytes(3 * MIB)
    assert b"".join(qcow2.guest_chunks(local_read(image), 4 * MIB)) == expected
    with pytest.raises(qcow2.Qcow2Error, match="is 4194304 bytes, not 4194305"):
        list(qcow2.guest_chunks(local_read(image), 4 * MIB + 1))


def test_qcow2_features_it_does_not_read_are_refused(tmp_path: Path) -> None:
    raw_image(tmp_path / "disk.img", 10 * MIB)
    compressed = converted(tmp_path / "disk.img", "-c")
    with pytest.raises(qcow2.Qcow2Error, match="compressed"):
        list(qcow2.guest_chunks(local_read(compressed), 10 * MIB))
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(compressed), str(overlay)], check=True, capture_output=True)
    with pytest.raises(qcow2.Qcow2Error, match="backing file"):
        list(qcow2.guest_chunks(local_read(overlay), 10 * MIB))
    with pytest.raises(qcow2.Qcow2Error, match="not a qcow2 image"):
        list(qcow2.guest_chunks(local_read(tmp_path / "disk.img"), 10 * MIB))


def test_write_pipeline_runs_steps_in_order_and_hands_errors_back() -> None:
    from conversions.p2v.pipeline import WritePipeline

    done: list[int] = []
    with WritePipeline("t", depth=2) as pipeline:
        for n in range(20):
            pipeline.put(lambda n=n: done.append(n))
        pipeline.drain()
    assert done == list(range(20))

    def broken() -> None:
        raise OSError("disk full")

    ran: list[int] = []
    pipeline = WritePipeline("t", depth=2)
    pipeline.put(broken)
    with pytest.raises(OSError, match="disk full"):
        for n in range(50):  # a later put (or the drain) raises; later steps never run
            pipeline.put(lambda n=n: ran.append(n))
        pipeline.drain()
    pipeline.abort()
    assert ran == []


def test_damaged_payloads_are_recognised() -> None:
    from conversions.p2v.copy import _unpacked

    data = os.urandom(1000) + bytes(3000)
    packed = zlib.compress(data)
    assert _unpacked(packed, FLAG_ZLIB, len(data)) == data
    assert _unpacked(data, 0, len(data)) is data
    assert _unpacked(packed[:-5] + b"xxxxx", FLAG_ZLIB, len(data)) is None
    assert _unpacked(data[:-1], 0, len(data)) is None
