from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

from xenweb.audit.models import AuditRecord


class AuditRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditRecord
        fields = [
            "id", "created_at", "username", "action", "target_type", "target_id",
            "target_label", "result", "message", "detail", "remote_addr",
        ]
        read_only_fields = fields


@extend_schema_view(list=extend_schema(parameters=[
    OpenApiParameter("action", str), OpenApiParameter("user", str),
    OpenApiParameter("result", str),
]))
class AuditViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log (administrators only): who did what to which target, and the result."""

    queryset = AuditRecord.objects.all()
    serializer_class = AuditRecordSerializer

    def get_queryset(self) -> QuerySet[AuditRecord]:
        queryset = super().get_queryset()
        params = self.request.query_params
        if params.get("action"):
            queryset = queryset.filter(action=params["action"])
        if params.get("user"):
            queryset = queryset.filter(username=params["user"])
        if params.get("result"):
            queryset = queryset.filter(result=params["result"])
        return queryset
