"""API: the performance series of a host or a guest for the charts."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from guests.charts import guest_series
from guests.models import Guest
from hosts.charts import host_series
from hosts.models import Host

MINUTES = OpenApiParameter("minutes", int, description="how far back (default 60, max 1440)")


class SeriesSerializer(serializers.Serializer):
    t = serializers.ListField(child=serializers.FloatField(), help_text="UNIX times")
    series = serializers.DictField(help_text="name: list of values (null where unknown)")


def _minutes(request: Request) -> int:
    raw = request.query_params.get("minutes", "60")
    return max(1, min(1440, int(raw))) if raw.isascii() and raw.isdigit() else 60


def _answer(series: dict[str, list[object]]) -> Response:
    times = series.pop("t")
    return Response({"t": times, "series": series})


class HostMetricsViewSet(viewsets.GenericViewSet):
    queryset = Host.objects.all()
    serializer_class = SeriesSerializer

    @extend_schema(parameters=[MINUTES], responses={200: SeriesSerializer})
    @action(detail=True, methods=["get"])
    def metrics(self, request: Request, pk: str | None = None) -> Response:
        """CPU and memory use of the host, and its running guests, over time."""
        return _answer(host_series(self.get_object(), _minutes(request)))


class GuestMetricsViewSet(viewsets.GenericViewSet):
    queryset = Guest.objects.all()
    serializer_class = SeriesSerializer

    @extend_schema(parameters=[MINUTES], responses={200: SeriesSerializer})
    @action(detail=True, methods=["get"])
    def metrics(self, request: Request, pk: str | None = None) -> Response:
        """CPU, memory, disk and network I/O of the guest over time."""
        return _answer(guest_series(self.get_object(), _minutes(request)))
