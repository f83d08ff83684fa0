from __future__ import annotations

from typing import Any

from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import DjangoModelPermissions
from rest_framework.request import Request
from rest_framework.response import Response

from xenweb.alerts import services
from xenweb.alerts.models import Alert


class AlertSerializer(serializers.ModelSerializer):
    severity = serializers.CharField(read_only=True)
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Alert
        fields = ["id", "kind", "severity", "subject", "message", "link", "count",
                  "created_at", "last_seen_at", "acknowledged_at", "acknowledged_by"]


class ViewAndChange(DjangoModelPermissions):
    perms_map = {**DjangoModelPermissions.perms_map,
                 "GET": ["%(app_label)s.view_%(model_name)s"],
                 "POST": ["%(app_label)s.change_%(model_name)s"]}


class AlertViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                   viewsets.GenericViewSet):
    """Alerts, newest first; `?open=1` lists those not acknowledged yet."""

    serializer_class = AlertSerializer
    permission_classes = [ViewAndChange]
    queryset = Alert.objects.none()  # for the permission class; get_queryset filters

    def get_queryset(self) -> Any:
        alerts = services.visible_alerts(self.request.user)
        if self.request.query_params.get("open") in ("1", "true"):
            alerts = alerts.filter(acknowledged_at=None)
        return alerts

    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk: str | None = None) -> Response:
        alert = self.get_object()
        services.acknowledge(Alert.objects.filter(pk=alert.pk), user=request.user)
        alert.refresh_from_db()
        return Response(AlertSerializer(alert).data)
