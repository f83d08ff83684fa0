"""Snapshot routes of the guest API (mixed into GuestViewSet):

GET/POST /api/v1/guests/{id}/snapshots/, POST …/snapshots/{name}/revert/,
DELETE …/snapshots/{name}/.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from guests.errors import GuestError
from guests.snapshots import services as snapshots
from guests.snapshots.plan import capability
from xenweb.jobs.api import accepted
from xenweb.jobs.models import Job
from xenweb.jobs.serializers import JobSerializer

SNAPSHOT_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}"
PERMISSIONS = {name: "guests.change_guest"
               for name in ("create_snapshot", "revert_snapshot", "delete_snapshot")}


class SnapshotSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    kind = serializers.ChoiceField(choices=["internal", "external", "lvm"])
    created = serializers.DateTimeField()
    guest_state = serializers.CharField(help_text="the guest's state when it was taken")
    with_memory = serializers.BooleanField()
    current = serializers.BooleanField()
    disks = serializers.ListField(child=serializers.CharField())
    missing = serializers.ListField(child=serializers.CharField(),
                                    help_text="LVM: snapshot volumes gone from the host")


class DiskPlanSerializer(serializers.Serializer):
    target = serializers.CharField()
    source = serializers.CharField()
    format = serializers.CharField()
    pool = serializers.CharField()
    pool_type = serializers.CharField()
    how = serializers.CharField(help_text="internal, external, lvm, skip, or empty: cannot")
    note = serializers.CharField()


class CapabilitySerializer(serializers.Serializer):
    supported = serializers.BooleanField()
    kind = serializers.CharField(allow_null=True)
    reason = serializers.CharField(help_text="why the guest cannot be snapshotted")
    with_memory = serializers.BooleanField()
    disks = DiskPlanSerializer(many=True)


class SnapshotListSerializer(serializers.Serializer):
    capability = CapabilitySerializer()
    results = SnapshotSerializer(many=True)


class CreateSnapshotSerializer(serializers.Serializer):
    name = serializers.RegexField(rf"^{SNAPSHOT_NAME}$", max_length=40)
    description = serializers.CharField(required=False, allow_blank=True, max_length=1000,
                                        default="")


def _capability(guest: Any) -> dict[str, Any]:
    plan = capability(guest)
    return {"supported": plan.supported, "kind": plan.kind, "reason": plan.reason,
            "with_memory": plan.with_memory, "disks": [asdict(d) for d in plan.disks]}


def _refused(exc: GuestError) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)


class SnapshotActions:
    """Snapshot actions for GuestViewSet (operators change, viewers read)."""

    get_object: Any

    @extend_schema(responses={200: SnapshotListSerializer})
    @action(detail=True, methods=["get"], url_path="snapshots")
    def snapshots(self, request: Request, pk: str | None = None) -> Response:
        """The guest's snapshots, and whether (and how) its storage can take one."""
        guest = self.get_object()
        try:
            found = snapshots.list_snapshots(guest)
        except GuestError as exc:
            return _refused(exc)
        return Response({"capability": _capability(guest),
                         "results": SnapshotSerializer([asdict(s) for s in found],
                                                       many=True).data})

    @extend_schema(request=CreateSnapshotSerializer, responses={
        201: SnapshotSerializer, 202: JobSerializer,
        409: OpenApiResponse(description="refused (e.g. the storage cannot snapshot), "
                                         "with `detail`")})
    @snapshots.mapping.post
    def create_snapshot(self, request: Request, pk: str | None = None) -> Response:
        """Take a snapshot: 201 at once, or 202 with a job for a running guest (its memory
        is saved too)."""
        guest = self.get_object()
        data = CreateSnapshotSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            outcome = snapshots.create_snapshot(guest, user=request.user, request=request,
                                                **data.validated_data)
        except GuestError as exc:
            return _refused(exc)
        if isinstance(outcome, Job):
            return accepted(outcome)
        return Response(SnapshotSerializer(asdict(outcome)).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={
        200: OpenApiResponse(description="reverted: the guest"), 202: JobSerializer,
        409: OpenApiResponse(description="refused, with `detail`")})
    @action(detail=True, methods=["post"],
            url_path=rf"snapshots/(?P<snapshot>{SNAPSHOT_NAME})/revert")
    def revert_snapshot(self, request: Request, pk: str | None = None,
                        snapshot: str = "") -> Response:
        """Revert the guest to the snapshot (a job for a running guest or LVM volumes,
        which are copied back)."""
        from guests.api.guests import GuestSerializer

        guest = self.get_object()
        try:
            outcome = snapshots.revert_snapshot(guest, snapshot, user=request.user,
                                                request=request)
        except GuestError as exc:
            return _refused(exc)
        if isinstance(outcome, Job):
            return accepted(outcome)
        return Response(GuestSerializer(outcome).data)

    @extend_schema(request=None, responses={
        204: None, 409: OpenApiResponse(description="refused, with `detail`")})
    @action(detail=True, methods=["delete"],
            url_path=rf"snapshots/(?P<snapshot>{SNAPSHOT_NAME})")
    def delete_snapshot(self, request: Request, pk: str | None = None,
                        snapshot: str = "") -> Response:
        """Delete the snapshot (the guest's current state is kept)."""
        guest = self.get_object()
        try:
            snapshots.delete_snapshot(guest, snapshot, user=request.user, request=request)
        except GuestError as exc:
            return _refused(exc)
        return Response(status=status.HTTP_204_NO_CONTENT)
