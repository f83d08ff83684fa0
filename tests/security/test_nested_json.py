"""L3: deeply nested JSON is a 400 (or a closed websocket), never a RecursionError.

Every API route of the URL conf (ids 1, backed by the demo inventory of
tests/test_security.py) gets deep bodies with every write method; the JSON websockets
get deep, malformed and binary messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import get_resolver

from tests.conftest import logged_in
from tests.test_access import all_paths
from tests.test_security import inventory  # noqa: F401 (the fixture)
from xenweb import json_limits
from xenweb.asgi import application
from xenweb.jobs.models import Job

DEEP = 50_000


def deep_bodies() -> dict[str, str]:
    return {
        "arrays": "[" * DEEP + "]" * DEEP,
        "objects": '{"a":' * DEEP + "1" + "}" * DEEP,
        "inside a field": '{"vcpus": 2, "name": ' + "[" * DEEP + "]" * DEEP + "}",
        "unclosed": "[" * DEEP,
        "just over the limit": '{"labels": ' + "[" * json_limits.MAX_DEPTH + "]"
                               * json_limits.MAX_DEPTH + "}",
    }


def test_the_limit_counts_only_real_nesting() -> None:
    brackets = "[" * (json_limits.MAX_DEPTH * 2)
    assert json_limits.loads(json.dumps({"a": brackets})) == {"a": brackets}
    assert json_limits.loads(json.dumps('"' + brackets)) == '"' + brackets  # escaped quote
    at_limit = "[" * json_limits.MAX_DEPTH + "]" * json_limits.MAX_DEPTH
    assert json_limits.loads(at_limit) is not None
    wide = json.dumps([[i] for i in range(10_000)])  # many brackets, shallow
    assert len(json_limits.loads(wide)) == 10_000
    for name, body in deep_bodies().items():
        with pytest.raises(ValueError):
            json_limits.loads(body)
        assert name
    with pytest.raises(ValueError):
        json_limits.loads("[NaN]")


def test_no_api_view_bypasses_the_bounded_parser() -> None:
    """Every DRF view of the URL conf parses JSON only with BoundedJSONParser."""
    from rest_framework.parsers import JSONParser

    seen = 0
    for pattern in _patterns(get_resolver()):
        cls = getattr(pattern.callback, "cls", None)
        if cls is None or not hasattr(cls, "parser_classes"):
            continue
        seen += 1
        for parser in cls.parser_classes:
            if issubclass(parser, JSONParser):
                assert issubclass(parser, json_limits.BoundedJSONParser), (cls, parser)
    assert seen > 20


def _patterns(resolver: Any) -> list[Any]:
    found = []
    for entry in resolver.url_patterns:
        if hasattr(entry, "url_patterns"):
            found += _patterns(entry)
        else:
            found.append(entry)
    return found


@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_every_api_route_answers_deep_json_with_400(inventory: None,  # noqa: F811
                                                    admin_user: Any) -> None:
    client = logged_in(admin_user)
    server_errors, parse_errors = [], 0
    paths = [p for p in all_paths() if p.startswith("/api/")]
    for path in paths:
        for method in ("post", "put", "patch"):
            for name, body in deep_bodies().items():
                answer = getattr(client, method)(path, body, content_type="application/json")
                if answer.status_code >= 500:
                    server_errors.append(f"{method.upper()} {path} ({name}) -> "
                                         f"{answer.status_code}")
                elif answer.status_code == 400 and "JSON parse error" in answer.json().get(
                        "detail", ""):
                    parse_errors += 1
    assert not server_errors, "\n".join(server_errors)
    assert parse_errors > 100, parse_errors  # the routes did read the bodies


@pytest.mark.django_db
def test_a_deep_body_gets_a_message(admin_client: Client) -> None:
    answer = admin_client.post("/api/v1/jobs/selftest/", "[" * DEEP + "]" * DEEP,
                               content_type="application/json")
    assert answer.status_code == 400
    assert "nested deeper than" in answer.json()["detail"]
    assert Job.objects.count() == 0  # nothing started


async def _socket(client: Client, path: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path, headers=[
        (b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())])
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    await communicator.receive_json_from(timeout=10)  # hello / the job's record
    return communicator


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize(("message", "code"), [
    ({"text_data": "[" * DEEP + "]" * DEEP}, 1007),
    ({"text_data": '{"a":' * DEEP + "1" + "}" * DEEP}, 1007),
    ({"text_data": "{not json"}, 1007),
    ({"bytes_data": b"\x00\x01"}, 1003),
])
async def test_json_websockets_close_on_deep_or_malformed_messages(
    admin_client_tx: Client, message: dict[str, Any], code: int,
) -> None:
    job = await Job.objects.acreate(kind="selftest", title="t")
    for path in ("/ws/events/", f"/ws/jobs/{job.pk}/"):
        communicator = await _socket(admin_client_tx, path)
        await communicator.send_to(**message)
        closed = await communicator.receive_output(timeout=10)
        assert closed == {"type": "websocket.close", "code": code}, path
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_json_websockets_still_take_well_formed_messages(admin_client_tx: Client) -> None:
    """A well-formed message is ignored (clients only listen) and the socket stays open:
    the next event still arrives."""
    from channels.layers import get_channel_layer

    from xenweb.realtime import EVENTS_GROUP

    communicator = await _socket(admin_client_tx, "/ws/events/")
    await communicator.send_json_to({"type": "ping", "deep": [[[1]]]})
    await get_channel_layer().group_send(EVENTS_GROUP, {"type": "inventory.update", "n": 1})
    assert await communicator.receive_json_from(timeout=10) == {"type": "inventory.update",
                                                                 "n": 1}
    await communicator.disconnect()
