"""Object ids from query strings: digits only, and within what the database can hold (a
larger number made SQLite raise OverflowError, a server error, instead of "no match")."""

from __future__ import annotations

MAX_ID = 2**63 - 1  # bigint: the largest primary key SQLite and PostgreSQL store


def parse_id(raw: str | None) -> int | None:
    """The id in `raw`, or None when it is not a plausible object id."""
    if raw and raw.isascii() and raw.isdigit():
        value = int(raw)
        if 0 < value <= MAX_ID:
            return value
    return None
