"""API: migration (preflight and start), placement labels and conflict sets."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from guests.errors import GuestError
from guests.migration.evacuation import evacuate_host
from guests.migration.preflight import MigrationOptions, preflight
from guests.migration.services import MODES, MigrationBlocked, request_migration
from guests.models import ConflictSet, Guest
from guests.placement.conflicts import clean_labels
from hosts.models import Host
from hosts.virt.migration import features_for
from xenweb.audit.services import record
from xenweb.ids import parse_id
from xenweb.jobs.api import accepted
from xenweb.jobs.errors import JobError
from xenweb.jobs.serializers import JobSerializer


class CheckSerializer(serializers.Serializer):
    check = serializers.CharField()
    ok = serializers.BooleanField()
    message = serializers.CharField()


class PreflightSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    checks = CheckSerializer(many=True)
    features = serializers.DictField(help_text="what the target's driver can do")


class MigrateSerializer(serializers.Serializer):
    host = serializers.PrimaryKeyRelatedField(queryset=Host.objects.all(),
                                              help_text="target host id")
    mode = serializers.ChoiceField(choices=MODES, default="live")
    block_copy = serializers.BooleanField(default=False,
                                          help_text="copy non-shared disks (slow)")
    max_downtime_ms = serializers.IntegerField(required=False, min_value=10, max_value=10000)
    bandwidth_mib = serializers.IntegerField(required=False, min_value=1, max_value=100000)
    auto_converge = serializers.BooleanField(required=False)
    postcopy = serializers.BooleanField(required=False)


class BlockedSerializer(serializers.Serializer):
    detail = serializers.CharField()
    checks = CheckSerializer(many=True)


class LabelsSerializer(serializers.Serializer):
    labels = serializers.ListField(child=serializers.CharField(max_length=64), max_length=32)


def _target(request: Request) -> Host | Response:
    host_id = parse_id(request.query_params.get("host"))
    host = Host.objects.filter(pk=host_id).first() if host_id else None
    if host is None:
        return Response({"detail": "Give the target host's id as ?host=."},
                        status=status.HTTP_400_BAD_REQUEST)
    return host


class GuestMigrationViewSet(viewsets.GenericViewSet):
    """Migration of one guest; its placement labels."""

    queryset = Guest.objects.select_related("host")
    serializer_class = MigrateSerializer
    action_permissions = {"migrate": "guests.change_guest", "labels": "guests.change_guest"}

    @extend_schema(
        parameters=[OpenApiParameter("host", int, required=True, description="target host id"),
                    OpenApiParameter("mode", str, description="live (default), cold"),
                    OpenApiParameter("block_copy", bool)],
        responses={200: PreflightSerializer},
    )
    @action(detail=True, methods=["get"], url_path="migrate/preflight")
    def preflight(self, request: Request, pk: str | None = None) -> Response:
        """Every check a migration to the host must pass, each with a plain-words result."""
        guest = self.get_object()
        target = _target(request)
        if isinstance(target, Response):
            return target
        mode = request.query_params.get("mode", "live")
        if mode not in MODES:
            return Response({"detail": f"mode must be one of {', '.join(MODES)}."},
                            status=status.HTTP_400_BAD_REQUEST)
        options = MigrationOptions(mode=mode, block_copy=request.query_params.get(
            "block_copy") in ("1", "true"))
        checks = preflight(guest, target, options)
        return Response({"ok": checks.ok, "checks": checks.as_list(),
                         "features": vars(features_for(target.hypervisor_type))})

    @extend_schema(request=MigrateSerializer, responses={
        202: JobSerializer, 409: BlockedSerializer,
    })
    @action(detail=True, methods=["post"], url_path="migrate")
    def migrate(self, request: Request, pk: str | None = None) -> Response:
        """Start a migration job (202) after a passing preflight; 409 lists what blocks it."""
        guest = self.get_object()
        data = MigrateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields: dict[str, Any] = dict(data.validated_data)
        target = fields.pop("host")
        try:
            job = request_migration(guest, target, user=request.user, request=request, **fields)
        except MigrationBlocked as exc:
            return Response({"detail": str(exc), "checks": exc.checks.as_list()},
                            status=status.HTTP_409_CONFLICT)
        except GuestError as exc:
            return Response({"detail": str(exc), "checks": []}, status=status.HTTP_409_CONFLICT)
        return accepted(job)

    @extend_schema(request=LabelsSerializer, responses={200: LabelsSerializer})
    @action(detail=True, methods=["put"], url_path="labels")
    def labels(self, request: Request, pk: str | None = None) -> Response:
        """Replace the guest's placement labels."""
        guest = self.get_object()
        data = LabelsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            guest.labels = clean_labels(data.validated_data["labels"])
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        guest.save(update_fields=["labels"])
        record("guest.labels", user=request.user, request=request, target=guest,
               labels=guest.labels)
        return Response({"labels": guest.labels})


class EvacuateSerializer(serializers.Serializer):
    maintenance = serializers.BooleanField(
        default=True, help_text="put the host in maintenance mode first (no new guests)")


class HostEvacuationViewSet(viewsets.GenericViewSet):
    """Evacuation of a host: every running guest live-migrated away."""

    queryset = Host.objects.all()
    serializer_class = EvacuateSerializer
    action_permissions = {"evacuate": "hosts.change_host"}

    @extend_schema(request=EvacuateSerializer, responses={202: JobSerializer, 409: None})
    @action(detail=True, methods=["post"], url_path="evacuate")
    def evacuate(self, request: Request, pk: str | None = None) -> Response:
        """Start the evacuation job (202); its result lists the guests moved and those that
        could not move, with the reasons."""
        host = self.get_object()
        data = EvacuateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            job = evacuate_host(host, maintenance=data.validated_data["maintenance"],
                                user=request.user, request=request)
        except JobError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return accepted(job)


class ConflictSetSerializer(serializers.ModelSerializer):
    class Meta:
        model = ConflictSet
        fields = ["id", "name", "labels", "description"]

    def validate_labels(self, value: list[str]) -> list[str]:
        if not isinstance(value, list):
            raise serializers.ValidationError("A list of labels.")
        try:
            labels = clean_labels(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        if not labels:
            raise serializers.ValidationError("A conflict set needs at least one label.")
        return labels


class ConflictSetViewSet(viewsets.ModelViewSet):
    """Conflict sets: guests whose labels are in one set never share a physical host."""

    queryset = ConflictSet.objects.all()
    serializer_class = ConflictSetSerializer

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        item = serializer.save()
        record("conflictset.create", user=self.request.user, request=self.request, target=item,
               labels=item.labels)

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        item = serializer.save()
        record("conflictset.update", user=self.request.user, request=self.request, target=item,
               labels=item.labels)

    def perform_destroy(self, instance: ConflictSet) -> None:
        record("conflictset.delete", user=self.request.user, request=self.request,
               target=instance)
        instance.delete()
