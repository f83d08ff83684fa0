"""Sizes as people write them: "10G", "512M", "1.5T", "4096" (bytes). Binary units, like
qemu-img and virsh: K = 1024."""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """Bytes for `value`; raises ValueError with a readable message."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("A size cannot be negative.")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"'{value}' is not a size: use bytes or a number with K, M, G or T "
                         "(e.g. 10G, 512M).")
    number, unit = match.groups()
    size = float(number) * _UNITS[unit.upper()]
    if not size.is_integer() and unit == "":
        raise ValueError("A size in bytes must be a whole number.")
    return int(size)
