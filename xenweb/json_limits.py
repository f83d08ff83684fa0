"""JSON from clients, with a nesting limit: every JSON request body (the API's parser) and
every JSON websocket message goes through ``loads`` here.

Python's decoder recurses once per level: a body of a few thousand ``[`` raised
RecursionError deep inside DRF, a server error instead of a 400. No document the appliance
takes nests deeper than a few levels, so anything deeper than ``MAX_DEPTH`` is refused
before it is decoded, with a message, and RecursionError is caught as well for safety.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils.json import strict_constant

MAX_DEPTH = 32

# A JSON string (skipped whole: brackets inside strings do not nest) or one bracket.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


class JsonTooDeep(ValueError):
    pass


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` in ``text`` (strings skipped);
    linear, and free for the usual document with few brackets."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH, strict: bool = True) -> Any:
    """``json.loads`` refusing documents nested deeper than ``max_depth`` (ValueError, as
    for any malformed JSON); with ``strict`` NaN and Infinity are refused too."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    if too_deep(text, max_depth):
        raise JsonTooDeep(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=strict_constant if strict else None)
    except RecursionError:
        raise JsonTooDeep(f"nested deeper than {max_depth} levels") from None


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with the nesting limit (the API's only JSON parser)."""

    def parse(self, stream: IO[bytes], media_type: str | None = None,
              parser_context: dict[str, Any] | None = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
            return loads(text, strict=self.strict)
        except ValueError as exc:  # UnicodeDecodeError and JsonTooDeep included
            raise ParseError(f"JSON parse error - {exc}") from None
