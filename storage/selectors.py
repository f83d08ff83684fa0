"""Reads over the pool and volume cache."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from storage.models import Pool, Volume
from xenweb.ids import parse_id


def pools(host_id: str | None = None) -> QuerySet[Pool]:
    queryset = Pool.objects.select_related("host").annotate(volume_count=Count("volumes")).order_by(
        "host__name", "name", "pk")
    if host_id is not None:
        queryset = queryset.filter(host_id=parse_id(host_id)) if parse_id(host_id) \
            else queryset.none()
    return queryset


def volumes(pool_id: str | None = None) -> QuerySet[Volume]:
    queryset = Volume.objects.select_related("pool", "pool__host")
    if pool_id is not None:
        queryset = queryset.filter(pool_id=parse_id(pool_id)) if parse_id(pool_id) \
            else queryset.none()
    return queryset
