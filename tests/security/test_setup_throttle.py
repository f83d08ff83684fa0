"""The setup token throttle is atomic (issue 18, L4): of many wrong tokens sent at once,
exactly the limit is evaluated and the rest refused unevaluated. A get-then-set let 20 of
60 parallel guesses through against a limit of 10."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client, override_settings

from tests.live.processes import WebServer
from wizard.views import MAX_TOKEN_FAILURES, TOKEN_LOCKOUT_SECONDS
from xenweb.appliance import throttle
from xenweb.audit.models import AuditRecord

PARALLEL = 60
CSRF = "c" * 32  # a CSRF secret: Django accepts it unmasked when cookie and field agree


def all_at_once(count: int, call: Callable[[int], Any]) -> list[Any]:
    """Run `call(i)` in `count` threads released together by a barrier."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        results[index] = call(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def clean_counter() -> Iterator[str]:
    name = "test-throttle:127.0.0.1"
    throttle.reset(name)
    yield name
    throttle.reset(name)


def test_parallel_attempts_get_exactly_the_limit(clean_counter: str) -> None:
    """The counter itself against the real Redis: 60 threads, 10 allowed."""
    allowed = all_at_once(PARALLEL, lambda _: throttle.take_attempt(
        clean_counter, limit=MAX_TOKEN_FAILURES, window_seconds=TOKEN_LOCKOUT_SECONDS))
    assert allowed.count(True) == MAX_TOKEN_FAILURES
    assert allowed.count(False) == PARALLEL - MAX_TOKEN_FAILURES
    # The window expires with the first attempt's expiry, never left without one.
    client, key = throttle._client_and_key(clean_counter)
    assert 0 < client.ttl(key) <= TOKEN_LOCKOUT_SECONDS
    assert throttle.take_attempt(clean_counter, limit=MAX_TOKEN_FAILURES,
                                 window_seconds=TOKEN_LOCKOUT_SECONDS) is False


def test_no_redis_means_no_evaluation(clean_counter: str) -> None:
    unreachable = {"default": {**settings.CACHES["default"],
                               "LOCATION": "redis://127.0.0.1:1/0"}}
    with override_settings(CACHES=unreachable), pytest.raises(throttle.ThrottleUnavailable):
        throttle.take_attempt(clean_counter, limit=1, window_seconds=60)


@pytest.mark.django_db
def test_the_wizard_refuses_unevaluated_while_redis_is_unreachable() -> None:
    settings.SETUP_TOKEN_FILE.unlink(missing_ok=True)
    Client().get("/setup/")
    token = settings.SETUP_TOKEN_FILE.read_text().strip()
    unreachable = {"default": {**settings.CACHES["default"],
                               "LOCATION": "redis://127.0.0.1:1/0"}}
    with override_settings(CACHES=unreachable):
        answer = Client().post("/setup/", {"token": token})
    assert answer.status_code == 200 and "cannot be checked right now" in answer.content.decode()
    settings.SETUP_TOKEN_FILE.unlink(missing_ok=True)


def _post_token(server: WebServer, token: str) -> str:
    body = urllib.parse.urlencode({"token": token, "csrfmiddlewaretoken": CSRF})
    connection = HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("POST", "/setup/", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={CSRF}"})
        response = connection.getresponse()
        return f"{response.status} {response.read().decode()}"
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_tokens_against_the_real_server() -> None:
    """60 wrong tokens at once to a fresh appliance's web process: 10 are checked (and
    audited), 50 refused unchecked, and then even the right token waits."""
    settings.SETUP_TOKEN_FILE.unlink(missing_ok=True)
    cache.delete("setup-token-failures:127.0.0.1")
    server = WebServer()  # its own: a shared one may have seen setup done
    try:
        answers = all_at_once(PARALLEL, lambda index: _post_token(server, f"guess-{index}"))
        assert all(answer.startswith("200 ") for answer in answers), answers[0][:300]
        checked = sum("not the setup token" in answer for answer in answers)
        refused = sum("Too many wrong tokens" in answer for answer in answers)
        assert (checked, refused) == (MAX_TOKEN_FAILURES, PARALLEL - MAX_TOKEN_FAILURES)
        assert AuditRecord.objects.filter(action="appliance.setup_token",
                                          result="refused").count() == MAX_TOKEN_FAILURES
        token = settings.SETUP_TOKEN_FILE.read_text().strip()
        assert "Too many wrong tokens" in _post_token(server, token)
    finally:
        server.stop()
        cache.delete("setup-token-failures:127.0.0.1")
        settings.SETUP_TOKEN_FILE.unlink(missing_ok=True)
