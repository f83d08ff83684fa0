"""Placement rules: conflict sets of labels whose guests never share a physical host.

Checked on start, migrate and automatic placement; each finding names the other guest.
"""

from __future__ import annotations

from collections.abc import Iterable

from guests.models import ConflictSet, Guest
from hosts.models import Host

ACTIVE_STATES = ("running", "blocked", "paused", "shutdown", "pmsuspended")


def _sets_for(labels: Iterable[str]) -> list[tuple[ConflictSet, set[str]]]:
    mine = set(labels)
    if not mine:
        return []
    found = []
    for conflict_set in ConflictSet.objects.all():
        members = set(conflict_set.labels)
        if members & mine:
            found.append((conflict_set, members))
    return found


def conflicts_on(host: Host, labels: Iterable[str], *, name: str,
                 exclude_uuid: object = None) -> list[str]:
    """Why a guest called ``name`` with ``labels`` may not run on ``host``: one message per
    conflicting guest there."""
    sets = _sets_for(labels)
    if not sets:
        return []
    problems = []
    others = host.guests.filter(state__in=ACTIVE_STATES)
    if exclude_uuid is not None:
        others = others.exclude(uuid=exclude_uuid)
    for other in others:
        for conflict_set, members in sets:
            shared = members & set(other.labels or [])
            if shared:
                problems.append(
                    f"'{other}' ({', '.join(sorted(shared))}) runs on {host}, and conflict set "
                    f"'{conflict_set}' forbids '{name}' on the same host."
                )
                break
    return problems


def placement_conflicts(guest: Guest, host: Host) -> list[str]:
    return conflicts_on(host, guest.labels, name=guest.name, exclude_uuid=guest.uuid)


def clean_labels(labels: Iterable[str]) -> list[str]:
    """Trimmed, unique, sorted labels; refuses empty or over-long ones."""
    cleaned = sorted({str(label).strip() for label in labels})
    for label in cleaned:
        if not label or len(label) > 64:
            raise ValueError(f"A label must be 1 to 64 characters long (got '{label}').")
    return cleaned
