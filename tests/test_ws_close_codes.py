"""The websocket close codes are defined once (xenweb.ws_base) and every consumer and page
uses those: the numbers are the protocol the browser pages act on."""

from __future__ import annotations

import re
from pathlib import Path

from guests.console import diagnosis, route, sessions, text_consumer, vnc_consumer
from xenweb import events, ws_base
from xenweb.jobs import consumers as job_consumers

STATIC = Path(__file__).resolve().parents[1] / "static" / "xenweb"

PROTOCOL = {
    "CLOSE_UNAUTHENTICATED": 4401,
    "CLOSE_FORBIDDEN": 4403,
    "CLOSE_NOT_FOUND": 4404,
    "CLOSE_GUEST_STOPPED": 4000,
    "CLOSE_TAKEN_OVER": 4001,
    "CLOSE_CONSOLE_ERROR": 4002,
    "CLOSE_NO_CONSOLE": 4003,
    "CLOSE_REFUSED_INPUT": 4004,
    "CLOSE_IN_USE": 4005,
    "CLOSE_UNSUPPORTED_DATA": 1003,
    "CLOSE_INVALID_PAYLOAD": 1007,
    "CLOSE_TRY_AGAIN_LATER": 1013,
}


def test_the_codes_are_the_protocol() -> None:
    defined = {name: value for name, value in vars(ws_base).items()
               if name.startswith("CLOSE_")}
    assert defined == PROTOCOL
    assert len(set(defined.values())) == len(defined)


def test_consumers_use_the_shared_codes() -> None:
    for module in (sessions, text_consumer, route, diagnosis, vnc_consumer, events,
                   job_consumers):
        for name, value in vars(module).items():
            if name.startswith("CLOSE_"):
                assert value == getattr(ws_base, name), (module.__name__, name)
                assert name in PROTOCOL, (module.__name__, name)


def js_codes(text: str) -> dict[str, int]:
    return {name: int(value) for name, value in re.findall(r"\b(CLOSE_[A-Z_]+) = (\d+)", text)}


def test_the_pages_act_on_the_same_codes() -> None:
    found: dict[str, int] = {}
    for script in sorted(STATIC.glob("*.js")):
        for name, value in js_codes(script.read_text()).items():
            assert PROTOCOL.get(name) == value, (script.name, name, value)
            found[name] = value
    assert {"CLOSE_GUEST_STOPPED", "CLOSE_TAKEN_OVER", "CLOSE_NO_CONSOLE", "CLOSE_IN_USE",
            "CLOSE_REFUSED_INPUT"} <= set(found)
