"""REST API for storage pools (thin: the work is in pool_services and sharing)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from hosts.models import Host
from hosts.virt import pool_xml as px
from storage import pool_services, selectors, services, sharing
from storage.access import AdminOnlyPool
from storage.errors import StorageError
from storage.models import Pool

REFUSED = OpenApiResponse(description="refused, with `detail`")
# Defining and deleting pools and declaring sharing change the host's configuration (and
# a wrong sharing declaration can corrupt disks on migration): administrators only.
ADMIN_ONLY = "hosts.change_host"


class SharedWithSerializer(serializers.Serializer):
    host = serializers.IntegerField()
    host_name = serializers.CharField()
    pool = serializers.IntegerField()
    pool_name = serializers.CharField()


class PoolSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    type = serializers.CharField(source="pool_type", read_only=True)
    host_name = serializers.CharField(source="host.name", read_only=True)
    volumes = serializers.SerializerMethodField()
    low_space = serializers.BooleanField(read_only=True)
    shared_with = serializers.SerializerMethodField()

    class Meta:
        model = Pool
        fields = ["id", "url", "name", "uuid", "type", "active", "autostart", "capacity",
                  "allocation", "available", "low_space", "target_path", "source",
                  "storage_key", "shared", "shared_declared", "share_label", "shared_with",
                  "iso_library", "host", "host_name", "volumes", "updated_at"]
        read_only_fields = fields

    def get_url(self, pool: Pool) -> str:
        return reverse("api:pool-detail", args=[pool.pk])

    def get_volumes(self, pool: Pool) -> int:
        count = getattr(pool, "volume_count", None)
        return pool.volumes.count() if count is None else count

    @extend_schema_field(SharedWithSerializer(many=True))
    def get_shared_with(self, pool: Pool) -> list[dict[str, Any]]:
        """The pools of other hosts that are the same storage."""
        return sharing.shared_with(pool)


class PoolCreateSerializer(serializers.Serializer):
    host = serializers.PrimaryKeyRelatedField(queryset=Host.objects.all())
    type = serializers.ChoiceField(choices=px.CREATABLE_TYPES)
    name = serializers.CharField(max_length=64)
    target_path = serializers.CharField(
        max_length=1024, required=False, default="",
        help_text="dir: the directory; fs/netfs: the mount point; iscsi: default "
                  "/dev/disk/by-path; logical: /dev/<vg>")
    source_host = serializers.CharField(max_length=255, required=False, default="",
                                        help_text="netfs: NFS server; iscsi: portal")
    source_dir = serializers.CharField(max_length=1024, required=False, default="",
                                       help_text="netfs: the exported directory")
    devices = serializers.ListField(
        child=serializers.CharField(max_length=1024), required=False, default=list,
        help_text="fs: the block device; logical: the physical volumes (for building)")
    source_name = serializers.CharField(max_length=128, required=False, default="",
                                        help_text="logical: the volume group (default: name)")
    source_format = serializers.CharField(
        max_length=32, required=False, default="",
        help_text="fs: ext4, xfs, gfs2, ocfs2… (auto); netfs: nfs (default), glusterfs, cifs")
    target_iqn = serializers.CharField(max_length=255, required=False, default="",
                                       help_text="iscsi: the target IQN")
    port = serializers.IntegerField(required=False, default=3260, help_text="iscsi portal port")
    initiator_iqn = serializers.CharField(max_length=255, required=False, default="",
                                          help_text="iscsi: this host's initiator IQN")
    build = serializers.BooleanField(
        default=False, help_text="create the storage: mkdir (dir, netfs mount point), mkfs on "
        "an empty device (fs), vgcreate on the devices (logical); never over existing data")
    start = serializers.BooleanField(default=True)
    autostart = serializers.BooleanField(default=True)


class EnabledSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()


class SharingSerializer(serializers.Serializer):
    shared = serializers.BooleanField(
        allow_null=True, help_text="true: declared shared; false: declared not shared; "
        "null: automatic (network storage types are shared)")
    label = serializers.CharField(max_length=64, required=False, default="", allow_blank=True,
                                  help_text="optional: groups declared pools across hosts "
                                  "instead of their path")


def refused(exc: Exception) -> Response:
    if isinstance(exc, AdminOnlyPool):
        return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
    return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)


def _fresh(pool: Pool) -> dict[str, Any]:
    return dict(PoolSerializer(selectors.pools().get(pk=pool.pk)).data)


@extend_schema(parameters=[OpenApiParameter("host", int, description="host id")])
class PoolViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                  mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Storage pools of all hosts, from the inventory cache, with capacity, a `low_space`
    warning, and which other hosts' pools are the same storage (`shared_with`)."""

    queryset = Pool.objects.all()
    serializer_class = PoolSerializer
    action_permissions = {
        "create": ADMIN_ONLY, "destroy": ADMIN_ONLY, "sharing": ADMIN_ONLY,
        "start": "storage.change_pool", "stop": "storage.change_pool",
        "autostart": "storage.change_pool", "refresh": "storage.change_pool",
        "iso_library": "storage.change_pool",
    }

    def get_queryset(self) -> QuerySet[Pool]:
        return selectors.pools(self.request.query_params.get("host"))

    @extend_schema(request=PoolCreateSerializer, responses={201: PoolSerializer, 409: REFUSED})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Define a pool on a host (dir, fs, netfs, logical, iscsi), optionally build its
        storage, start it and mark it autostart. Nothing stays defined when a step fails."""
        data = PoolCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params = dict(data.validated_data)
        try:
            spec = pool_services.spec_from_fields(params["type"], params)
        except StorageError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        try:
            pool = pool_services.create_pool(
                params["host"], spec, build=params["build"], start=params["start"],
                autostart=params["autostart"], user=request.user, request=request)
        except StorageError as exc:
            return refused(exc)
        return Response(_fresh(pool), status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[OpenApiParameter(
        "delete_storage", bool, description="dir pools: also remove the (empty) directory")],
        responses={204: None, 409: REFUSED})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Stop and undefine the pool (refused while a guest has a disk on it)."""
        pool = self.get_object()
        delete_storage = request.query_params.get("delete_storage", "").lower() in (
            "1", "true", "yes")
        try:
            pool_services.delete_pool(pool, delete_storage=delete_storage, user=request.user,
                                      request=request)
        except StorageError as exc:
            return refused(exc)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _run(self, work: Any) -> Response:
        try:
            pool = work()
        except StorageError as exc:
            return refused(exc)
        return Response(_fresh(pool))

    @extend_schema(request=None, responses={200: PoolSerializer, 409: REFUSED})
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        pool = self.get_object()
        return self._run(lambda: pool_services.start_pool(pool, user=request.user,
                                                          request=request))

    @extend_schema(request=None, responses={200: PoolSerializer, 409: REFUSED})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str | None = None) -> Response:
        """Stop the pool (refused while a running guest has a disk on it)."""
        pool = self.get_object()
        return self._run(lambda: pool_services.stop_pool(pool, user=request.user,
                                                         request=request))

    @extend_schema(request=EnabledSerializer, responses={200: PoolSerializer, 409: REFUSED})
    @action(detail=True, methods=["post"])
    def autostart(self, request: Request, pk: str | None = None) -> Response:
        pool = self.get_object()
        data = EnabledSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._run(lambda: pool_services.set_autostart(
            pool, data.validated_data["enabled"], user=request.user, request=request))

    @extend_schema(request=None, responses={200: PoolSerializer, 409: REFUSED})
    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, pk: str | None = None) -> Response:
        """Re-read the pool and its volumes from libvirt."""
        pool = self.get_object()
        return self._run(lambda: services.refresh_pool(pool, user=request.user,
                                                       request=request))

    @extend_schema(request=SharingSerializer, responses={200: PoolSerializer, 409: REFUSED})
    @action(detail=True, methods=["post"])
    def sharing(self, request: Request, pk: str | None = None) -> Response:
        """Declare the pool shared (optionally with a label grouping it with other hosts'
        pools), not shared, or back to automatic recognition."""
        pool = self.get_object()
        data = SharingSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._run(lambda: sharing.declare_sharing(
            pool, data.validated_data["shared"], label=data.validated_data["label"],
            user=request.user, request=request))

    @extend_schema(request=EnabledSerializer, responses={200: PoolSerializer})
    @action(detail=True, methods=["post"], url_path="iso-library")
    def iso_library(self, request: Request, pk: str | None = None) -> Response:
        """Mark the pool as an ISO library (its ISO images are offered as CD-ROMs when
        creating guests on its host) or unmark it. A host may have several."""
        pool = self.get_object()
        data = EnabledSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._run(lambda: pool_services.set_iso_library(
            pool, data.validated_data["enabled"], user=request.user, request=request))
