"""A job as its page shows it: log times in the appliance's time zone, the result as rows
with links to what the job made."""

from __future__ import annotations

import json
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from django.urls import NoReverseMatch, reverse

from xenweb.appliance.models import current_settings

# Result keys that name something with a page of its own: its URL name.
LINKED = {"guest": "guests:detail", "host": "hosts:detail", "pool": "storage:pool",
          "job": "jobs:detail"}
LABELS = {"guest": "Guest made", "download": "File", "volume": "Volume", "volumes": "Volumes",
          "host": "Host", "pool": "Pool", "type": "Guest type", "devices": "Devices",
          "bytes": "Bytes", "steps": "Steps"}


@dataclass(frozen=True)
class ResultRow:
    label: str
    value: str
    url: str = ""


def appliance_zone() -> tzinfo:
    try:
        return zoneinfo.ZoneInfo(current_settings().time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return UTC


def log_time(stamp: str, zone: tzinfo) -> str:
    """A log line's time (stored in UTC, ISO) as HH:MM:SS in `zone`; older lines stored
    the UTC time of day only and are shown as they are."""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        return stamp
    return moment.astimezone(zone).strftime("%H:%M:%S")


def _link(key: str, value: Any) -> str:
    if key == "download" and isinstance(value, str):
        # A path of this site only: "//host/…" or "/\\host" would leave it.
        return value if value.startswith("/") and value[1:2] not in ("/", "\\") else ""
    name = LINKED.get(key)
    if name is None or isinstance(value, bool) or not isinstance(value, int | str):
        return ""
    try:
        return reverse(name, args=[value])
    except NoReverseMatch:
        return ""


def _text(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "\n".join(value)
    if isinstance(value, dict | list):
        return json.dumps(value, indent=1, sort_keys=True)
    return str(value)


def result_rows(result: Any) -> list[ResultRow]:
    """The result's entries, those naming a guest, host, pool or file linked."""
    if result is None:
        return []
    if not isinstance(result, dict):
        return [ResultRow("Result", _text(result))]
    return [ResultRow(LABELS.get(key, key.replace("_", " ").capitalize()), _text(value),
                      _link(key, value)) for key, value in result.items()]
