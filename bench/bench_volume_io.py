"""Volume upload/download throughput through the app (the web server, the REST API) against
`virsh vol-upload` / `vol-download` of the same file to the same lab host in the same run
(medians of four rounds in alternating order; each run starts with the page cache written
back and a pause). Goal: app / virsh >= 0.8 both ways. The app moves the bytes of a
volume this machine holds in its file (the dom0 the appliance runs on; the lab host here):
the headline ratios. Also measured: the
same app sending them through libvirt streams, as it does for remote hosts
(the `stream_*` figures).

Also reported: the CPU seconds the web server spent per transfer against virsh's (libvirtd's
share is the same for both), which the machine's other load does not distort as it does
the throughput ratios, and the load average during the run."""

from __future__ import annotations

import http.client
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.authtoken.models import Token

from bench.stats import quiet_start
from hosts.models import Host
from lab.daemons import lab_down, lab_up
from lab.register import register_lab_host
from storage import services
from storage.inventory import reconcile_pools
from storage.models import Pool
from storage.volume_io import IO_ENV
from tests.live.processes import WebServer
from xenweb.accounts.roles import ADMIN, set_role, sync_roles
from xenweb.appliance.models import ApplianceSettings

SIZE = 512 * 1024 * 1024
CHUNK = 1024 * 1024
ROUNDS = 4


def _upload(server: WebServer, token: str, url: str, path: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    conn.putrequest("PUT", url)
    conn.putheader("Authorization", f"Token {token}")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(path.stat().st_size))
    conn.endheaders()
    with open(path, "rb") as src:
        while block := src.read(CHUNK):
            conn.send(block)
    response = conn.getresponse()
    body = response.read()
    if response.status != 201:
        raise RuntimeError(f"upload failed: {response.status} {body[:500]!r}")


def _download(server: WebServer, token: str, url: str, path: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    conn.request("GET", url, headers={"Authorization": f"Token {token}"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"download failed: {response.status}")
    buffer = bytearray(CHUNK)  # reused: a new 1 MiB object per read costs page faults
    view = memoryview(buffer)
    with open(path, "wb") as out:
        while size := response.readinto(buffer):
            out.write(view[:size])


def _timed(fn: Any) -> float:
    """Seconds `fn` takes, started with the earlier runs' dirty pages written back."""
    quiet_start()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _mbps(seconds: float) -> float:
    return round(SIZE / seconds / 1024**2, 1)


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="xenweb-bench-io-") as tmp:
        root = Path(tmp)
        lab = lab_up(1, root=root / "lab")[0]
        server = streaming = None
        try:
            # A lab host row left by an earlier run names a lab that is gone.
            Host.objects.filter(name=lab.name, is_lab=True).delete()
            host, _ = register_lab_host(lab)
            reconcile_pools(host)
            pool = Pool.objects.get(host=host, name="local")
            settings_row = ApplianceSettings.load()
            if settings_row.setup_completed_at is None:
                settings_row.setup_completed_at = timezone.now()
                settings_row.save()
            sync_roles()
            user, _ = get_user_model().objects.get_or_create(username="bench-io")
            set_role(user, ADMIN)
            token, _ = Token.objects.get_or_create(user=user)
            source = root / "random.img"
            with open(source, "wb") as out:
                for _ in range(SIZE // CHUNK):
                    out.write(os.urandom(CHUNK))
            name = f"bench-{uuid.uuid4().hex[:6]}.img"
            volume = services.create_volume(pool, name=name, capacity=SIZE)
            server = WebServer()
            streaming = WebServer(env={IO_ENV: "libvirt"})
            url = f"/api/v1/volumes/{volume.pk}/content/"
            virsh = ["virsh", "-q", "-c", lab.uri]

            results: dict[str, float] = {}
            # CPU seconds per run: the web server's (the app's side of the copy) against
            # virsh's, a measure that the machine's other load does not distort.
            cpu: dict[str, float] = {}

            def app(kind: str, fn: Any, web: WebServer) -> float:
                before = _cpu_seconds(web.proc.pid)
                seconds = _timed(fn)
                cpu[kind] = min(cpu.get(kind, 1e9), _cpu_seconds(web.proc.pid) - before)
                return seconds

            def baseline(kind: str, argv: list[str]) -> float:
                before = _children_cpu()
                seconds = _timed(lambda: subprocess.run(argv, check=True))
                cpu[kind] = min(cpu.get(kind, 1e9), _children_cpu() - before)
                return seconds

            out_file = root / "app.out"
            def through_app(rnd: int) -> None:
                for kind, web in (("app", server), ("stream", streaming)):
                    results[f"{kind}_up_{rnd}"] = app(
                        f"{kind}_up", lambda w=web: _upload(w, token.key, url, source), web)
                    results[f"{kind}_down_{rnd}"] = app(
                        f"{kind}_down", lambda w=web: _download(w, token.key, url, out_file),
                        web)

            def through_virsh(rnd: int) -> None:
                results[f"virsh_up_{rnd}"] = baseline(
                    "virsh_up", [*virsh, "vol-upload", "--pool", "local", name, str(source)])
                results[f"virsh_down_{rnd}"] = baseline(
                    "virsh_down",
                    [*virsh, "vol-download", "--pool", "local", name, str(root / "virsh.out")])

            for rnd in range(ROUNDS):  # alternating which goes first
                for side in ((through_app, through_virsh) if rnd % 2 == 0
                             else (through_virsh, through_app)):
                    side(rnd)
            kinds = ("app_up", "stream_up", "virsh_up", "app_down", "stream_down", "virsh_down")
            median = {kind: statistics.median(v for k, v in results.items()
                                              if k.startswith(kind)) for kind in kinds}
            out = {
                "bytes": SIZE,
                "app_upload_mib_s": _mbps(median["app_up"]),
                "virsh_upload_mib_s": _mbps(median["virsh_up"]),
                "upload_ratio": round(median["virsh_up"] / median["app_up"], 3),
                "app_download_mib_s": _mbps(median["app_down"]),
                "virsh_download_mib_s": _mbps(median["virsh_down"]),
                "download_ratio": round(median["virsh_down"] / median["app_down"], 3),
                "stream_upload_mib_s": _mbps(median["stream_up"]),
                "stream_upload_ratio": round(median["virsh_up"] / median["stream_up"], 3),
                "stream_download_mib_s": _mbps(median["stream_down"]),
                "stream_download_ratio": round(median["virsh_down"] / median["stream_down"], 3),
                "goal_ratio": 0.8,
                "cpu_seconds": {kind: round(value, 2) for kind, value in cpu.items()},
                "load_average": os.getloadavg()[0],
            }
            print(json.dumps(out, indent=2), flush=True)
            services.delete_volume(volume)
            return out
        finally:
            for web in (server, streaming):
                if web is not None:
                    web.stop()
            lab_down(root / "lab")
