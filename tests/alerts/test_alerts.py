"""Alerts: raised by what goes wrong (a host away and back, a pool filling up, a failed
job, a crashed guest), counted instead of repeated, seen as their jobs are, acknowledged,
announced on the events websocket and sent by e-mail and webhook per kind."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.test import Client, override_settings

from guests.inventory import reconcile_host
from guests.models import Guest
from hosts.models import Host
from hosts.virt.connection import get_connection
from hosts.virt.demo import demo_uri
from inventory.monitor import refresh_host
from storage.inventory import reconcile_pools
from tests.conftest import logged_in, make_user
from xenweb.accounts.roles import OPERATOR
from xenweb.alerts.delivery import deliver
from xenweb.alerts.models import Alert, AlertKind, AlertRoute
from xenweb.alerts.services import raise_alert, visible_alerts
from xenweb.jobs.runner import run_job
from xenweb.jobs.services import start_job

pytestmark = pytest.mark.django_db

CRASHED_XML = """<node xmlns:test="http://libvirt.org/schemas/domain/test/1.0">
  <domain type="test"><name>crashy</name><uuid>6f1d2c3b-0000-4000-8000-000000000001</uuid>
    <memory unit="MiB">128</memory><os><type>hvm</type></os>
    <test:runstate>6</test:runstate></domain>
</node>"""


def test_a_host_that_goes_away_and_comes_back_raises_both_counted(tmp_path: Path) -> None:
    host = Host.objects.create(name="rack-7", uri=demo_uri())
    refresh_host(host)
    for _flap in range(2):
        host.uri = f"test://{tmp_path}/gone.xml"
        refresh_host(host)
        host.uri = demo_uri()
        refresh_host(host)
    away = Alert.objects.get(kind=AlertKind.HOST_UNREACHABLE)
    assert away.count == 2 and away.subject == f"host:{host.pk}"
    assert away.message.startswith("Host 'rack-7' is unreachable: ")
    assert away.link == host.get_absolute_url() and away.severity == "danger"
    back = Alert.objects.get(kind=AlertKind.HOST_BACK)
    assert back.count == 2 and back.message.startswith("Host 'rack-7' answers again after ")


def test_a_pool_that_fills_up_raises_once(demo: Host) -> None:
    pool = demo.pools.get(name="default")
    assert not pool.low_space and not Alert.objects.exists()
    # A volume takes all but 5 % of the pool's capacity (the threshold is 10 %).
    size = pool.available - pool.capacity // 20
    get_connection(demo.virt_target).storagePoolLookupByName("default").createXML(
        f"<volume><name>filler.img</name><capacity>{size}</capacity>"
        f"<allocation>{size}</allocation></volume>", 0)
    reconcile_pools(demo)
    reconcile_pools(demo)  # still low: no second alert
    low = Alert.objects.get(kind=AlertKind.POOL_LOW_SPACE, subject=f"pool:{pool.pk}")
    assert low.count == 1
    assert low.message.startswith("Pool 'default' on host 'demo' is low on space: ")
    assert low.link == f"/storage/pools/{pool.pk}/"


def test_a_crashed_guest_raises_an_alert(tmp_path: Path) -> None:
    node = tmp_path / "crash.xml"
    node.write_text(CRASHED_XML)
    host = Host.objects.create(name="crashing", uri=f"test://{node}")
    reconcile_host(host)
    guest = Guest.objects.get(host=host, name="crashy")
    assert guest.state == "crashed"
    assert not Alert.objects.exists()  # found crashed: nothing was seen to crash
    Guest.objects.filter(pk=guest.pk).update(state="running")
    reconcile_host(host)
    alert = Alert.objects.get(kind=AlertKind.GUEST_CRASHED)
    assert alert.message == "Guest 'crashy' on host 'crashing' crashed."
    assert alert.link == guest.get_absolute_url()


def failed_job(owner: Any) -> Any:
    job = start_job("xenweb.jobs.tasks.selftest", kind="selftest", owner=owner,
                    title="Self-test", params={"steps": 2, "step_seconds": 0, "fail_at": 1},
                    enqueue=False)
    from xenweb.jobs.tasks import selftest

    run_job(job.pk, selftest.body, task_id=f"t-{job.pk}", worker="test")
    job.refresh_from_db()
    assert job.state == "failed"
    return job


def test_a_failed_job_raises_an_alert_seen_as_the_job_is(admin_user: Any,
                                                         operator_user: Any) -> None:
    job = failed_job(operator_user)
    alert = Alert.objects.get(kind=AlertKind.JOB_FAILED)
    assert alert.message == ("Job 'Self-test' failed: Self-test failed on purpose at step 1.")
    assert alert.link == f"/jobs/{job.pk}/" and alert.restricted
    other = make_user("olga-operator", OPERATOR)
    assert list(visible_alerts(operator_user)) == [alert]  # the owner
    assert list(visible_alerts(admin_user)) == [alert]  # administrators see every job
    assert not visible_alerts(other).exists()  # a self-test has no target to act on
    page = logged_in(other).get("/alerts/").content.decode()
    assert "Self-test" not in page


def test_the_list_the_bell_and_acknowledging(admin_client: Client, viewer_client: Client,
                                             admin_user: Any) -> None:
    raise_alert(AlertKind.HOST_UNREACHABLE, "host:1", "Host 'a' is unreachable: refused")
    raise_alert(AlertKind.POOL_LOW_SPACE, "pool:1", "Pool 'p' on host 'a' is low on space")
    page = viewer_client.get("/").content.decode()
    assert 'id="alert-count">2</span>' in page and 'id="dashboard-alerts"' in page
    assert viewer_client.get("/alerts/count/").json() == {"open": 2}
    listing = viewer_client.get("/alerts/").content.decode()
    assert "Host &#x27;a&#x27; is unreachable: refused" in listing
    assert ">Acknowledge</button>" not in listing  # viewers only look
    one = Alert.objects.get(subject="host:1")
    assert viewer_client.post(f"/alerts/{one.pk}/acknowledge/").status_code == 403
    admin_client.post(f"/alerts/{one.pk}/acknowledge/")
    one.refresh_from_db()
    assert one.acknowledged_by == admin_user and not one.open
    assert viewer_client.get("/alerts/count/").json() == {"open": 1}
    # Raised again after acknowledgement: a new alert, not the old one counted.
    raise_alert(AlertKind.HOST_UNREACHABLE, "host:1", "Host 'a' is unreachable: again")
    assert Alert.objects.filter(subject="host:1").count() == 2
    admin_client.post("/alerts/acknowledge/")
    assert not Alert.objects.filter(acknowledged_at=None).exists()
    assert "acknowledged by alice-admin" in admin_client.get("/alerts/?all=1").content.decode()


def test_the_api_lists_and_acknowledges(operator_client: Client, viewer_client: Client) -> None:
    alert = raise_alert(AlertKind.GUEST_CRASHED, "guest:x", "Guest 'x' on host 'a' crashed.")
    listed = viewer_client.get("/api/v1/alerts/?open=1").json()
    assert [row["id"] for row in listed["results"]] == [alert.pk]
    assert listed["results"][0]["severity"] == "danger"
    assert viewer_client.post(f"/api/v1/alerts/{alert.pk}/acknowledge/").status_code == 403
    done = operator_client.post(f"/api/v1/alerts/{alert.pk}/acknowledge/")
    assert done.status_code == 200 and done.json()["acknowledged_by"] == "oscar-operator"
    assert viewer_client.get("/api/v1/alerts/?open=1").json()["results"] == []


def test_routes_are_the_administrators(admin_client: Client, operator_client: Client) -> None:
    assert "Sending alerts" not in operator_client.get("/alerts/").content.decode()
    assert operator_client.post("/alerts/routes/job_failed/", {
        "job_failed-emails": "x@example.org"}).status_code == 403
    bad = admin_client.post("/alerts/routes/job_failed/", {
        "job_failed-emails": "ops@example.org, not-an-address",
        "job_failed-webhook_url": ""}, follow=True)
    assert "&#x27;not-an-address&#x27; is not an e-mail address." in bad.content.decode()
    assert not AlertRoute.objects.exists()
    bad = admin_client.post("/alerts/routes/job_failed/", {
        "job_failed-emails": "", "job_failed-webhook_url": "ftp://example.org/x"}, follow=True)
    assert not AlertRoute.objects.exists()
    admin_client.post("/alerts/routes/job_failed/", {
        "job_failed-emails": " ops@example.org ,oncall@example.org",
        "job_failed-webhook_url": "https://hooks.example.org/xenweb"})
    route = AlertRoute.objects.get(kind="job_failed")
    assert route.email_list == ["ops@example.org", "oncall@example.org"]


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server on the loopback that keeps what it is sent."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"json": json.loads(body), "type": self.headers["Content-Type"]})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


def test_delivery_by_email_and_webhook(webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook
    AlertRoute.objects.create(kind=AlertKind.HOST_UNREACHABLE, emails="ops@example.org",
                              webhook_url=url)
    alert = raise_alert(AlertKind.HOST_UNREACHABLE, "host:9", "Host 'b' is unreachable: x",
                        link="/hosts/9/")
    with override_settings(ALERT_BASE_URL="https://xenweb.example.org"):
        assert deliver(alert) == []
    assert [m.to for m in mail.outbox] == [["ops@example.org"]]
    assert mail.outbox[0].subject == "[xenweb] host unreachable: Host 'b' is unreachable: x"
    assert "Page: https://xenweb.example.org/hosts/9/" in mail.outbox[0].body
    assert received[0]["type"] == "application/json"
    assert received[0]["json"]["alert"]["kind"] == "host_unreachable"
    assert received[0]["json"]["alert"]["message"] == "Host 'b' is unreachable: x"


def test_a_delivery_that_fails_says_why_and_loses_nothing() -> None:
    AlertRoute.objects.create(kind=AlertKind.GUEST_CRASHED, webhook_url="http://127.0.0.1:9/")
    alert = raise_alert(AlertKind.GUEST_CRASHED, "guest:y", "Guest 'y' crashed.")
    problems = deliver(alert)
    assert len(problems) == 1 and problems[0].startswith("webhook http://127.0.0.1:9/: ")
    assert Alert.objects.filter(pk=alert.pk, acknowledged_at=None).exists()


def test_acknowledging_never_redirects_off_the_site(admin_client: Client) -> None:
    alert = raise_alert(AlertKind.GUEST_CRASHED, "guest:z", "Guest 'z' crashed.")
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        answer = admin_client.post(f"/alerts/{alert.pk}/acknowledge/", {"next": target})
        assert answer.status_code == 302 and answer["Location"] == "/alerts/"
        answer = admin_client.post("/alerts/acknowledge/", {"next": target})
        assert answer["Location"] == "/alerts/"


@pytest.fixture
def redirecting() -> Iterator[tuple[str, list[str]]]:
    """A webhook that answers with a redirect to another address, which logs any visit."""
    visited: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            visited.append(self.path)
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/inner")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", visited
    server.shutdown()
    server.server_close()


def test_a_webhook_redirect_is_not_followed(redirecting: tuple[str, list[str]]) -> None:
    url, visited = redirecting
    AlertRoute.objects.create(kind=AlertKind.GUEST_CRASHED, webhook_url=url)
    problems = deliver(raise_alert(AlertKind.GUEST_CRASHED, "guest:r", "Guest 'r' crashed."))
    assert visited == ["/hook"]  # the redirect's target was never asked
    assert len(problems) == 1 and "307" in problems[0]


@pytest.mark.parametrize("url", ["file:///etc/shadow", "ftp://127.0.0.1/x",
                                 "gopher://127.0.0.1:6379/_FLUSHALL"])
def test_a_webhook_is_http_only_even_when_stored_behind_the_forms_back(url: str) -> None:
    AlertRoute.objects.create(kind=AlertKind.JOB_FAILED, webhook_url=url)
    alert = raise_alert(AlertKind.JOB_FAILED, "job:1", "Job 'x' failed.")
    problems = deliver(alert)
    assert problems == [f"webhook {url}: '{url}' is not an http(s) URL."]
