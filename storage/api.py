"""REST API for volumes (thin: the work is in services, jobs and transfers; pools: api_pools)."""

from __future__ import annotations

from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import HttpResponseBase, StreamingHttpResponse
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

from storage import attachments, selectors, services, transfers, uploads
from storage.access import AdminOnlyPool
from storage.errors import StorageError
from storage.models import Pool, Volume
from storage.units import parse_size
from xenweb.jobs.api import accepted
from xenweb.jobs.serializers import JobSerializer
from xenweb.streamed_body import streams_body

REFUSED = OpenApiResponse(description="refused, with `detail`")


class VolumeUserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    state = serializers.CharField()
    host = serializers.IntegerField(source="host_id")


class VolumeSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    content_url = serializers.SerializerMethodField()
    pool_name = serializers.CharField(source="pool.name", read_only=True)
    host = serializers.IntegerField(source="pool.host_id", read_only=True)
    used_by = serializers.SerializerMethodField()

    class Meta:
        model = Volume
        fields = ["id", "url", "content_url", "name", "path", "format", "capacity",
                  "allocation", "content_state", "pool", "pool_name", "host", "used_by",
                  "updated_at"]
        read_only_fields = fields

    def get_url(self, volume: Volume) -> str:
        return reverse("api:volume-detail", args=[volume.pk])

    def get_content_url(self, volume: Volume) -> str:
        return reverse("api:volume-detail", args=[volume.pk]) + "content/"

    @extend_schema_field(VolumeUserSerializer(many=True))
    def get_used_by(self, volume: Volume) -> list[dict[str, Any]]:
        """Guests with a disk on this volume (guests.devices disks' source == path)."""
        return [dict(VolumeUserSerializer(g).data) for g in attachments.guests_using(volume)]


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}],
                      "example": "10G"})
class SizeField(serializers.Field):
    """Bytes, or a human size: "10G", "512M", "1.5T" (K = 1024)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int | str):
            raise serializers.ValidationError("Give a size in bytes or like '10G'.")
        try:
            return parse_size(data)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def to_representation(self, value: int) -> int:
        return value


class VolumeCreateSerializer(serializers.Serializer):
    pool = serializers.PrimaryKeyRelatedField(queryset=Pool.objects.select_related("host"))
    name = serializers.CharField(max_length=200)
    size = SizeField(help_text='bytes, or "10G", "512M"…')
    format = serializers.ChoiceField(choices=services.FORMATS, default="raw")
    allocation = serializers.ChoiceField(choices=["sparse", "preallocated"], default="sparse")


class ResizeSerializer(serializers.Serializer):
    size = SizeField(help_text="the new, larger size")


class CloneSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, help_text="name of the copy (same pool)")


def refused(exc: Exception) -> Response:
    if isinstance(exc, AdminOnlyPool):
        return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
    return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)


@extend_schema(parameters=[OpenApiParameter("pool", int, description="pool id")])
class VolumeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                    mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Volumes of all pools, from the inventory cache, with the guests using each."""

    queryset = Volume.objects.all()
    serializer_class = VolumeSerializer
    action_permissions = {"resize": "storage.change_volume", "clone": "storage.add_volume",
                          "wipe": "storage.change_volume", "upload": "storage.change_volume",
                          # Disk contents can hold secrets: reading them is not for viewers.
                          "content": "storage.change_volume"}

    def get_queryset(self) -> QuerySet[Volume]:
        return selectors.volumes(self.request.query_params.get("pool"))

    @extend_schema(request=VolumeCreateSerializer, responses={201: VolumeSerializer,
                                                              409: REFUSED})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Create a volume in a pool: raw or qcow2, sparse or preallocated."""
        data = VolumeCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        try:
            volume = services.create_volume(
                params["pool"], name=params["name"], capacity=params["size"],
                fmt=params["format"], preallocate=params["allocation"] == "preallocated",
                user=request.user, request=request)
        except StorageError as exc:
            return refused(exc)
        return Response(VolumeSerializer(volume).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ResizeSerializer, responses={200: VolumeSerializer, 409: REFUSED})
    @action(detail=True, methods=["post"])
    def resize(self, request: Request, pk: str | None = None) -> Response:
        """Grow the volume (shrinking is refused: it would cut data off)."""
        volume = self.get_object()
        data = ResizeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            volume = services.resize_volume(volume, data.validated_data["size"],
                                            user=request.user, request=request)
        except StorageError as exc:
            return refused(exc)
        return Response(VolumeSerializer(volume).data)

    @extend_schema(request=CloneSerializer, responses={202: JobSerializer, 409: REFUSED})
    @action(detail=True, methods=["post"])
    def clone(self, request: Request, pk: str | None = None) -> Response:
        """Copy the volume under a new name in the same pool (a job; its result names the
        new volume)."""
        volume = self.get_object()
        data = CloneSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            job = services.start_clone(volume, data.validated_data["name"],
                                       user=request.user, request=request)
        except StorageError as exc:
            return refused(exc)
        return accepted(job)

    @extend_schema(request=None, responses={202: JobSerializer, 409: REFUSED})
    @action(detail=True, methods=["post"])
    def wipe(self, request: Request, pk: str | None = None) -> Response:
        """Overwrite the volume's content with zeros (a job)."""
        volume = self.get_object()
        try:
            job = services.start_wipe(volume, user=request.user, request=request)
        except StorageError as exc:
            return refused(exc)
        return accepted(job)

    @extend_schema(responses={204: None, 409: REFUSED})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Delete the volume (refused while a running guest uses it)."""
        volume = self.get_object()
        try:
            services.delete_volume(volume, user=request.user, request=request)
        except StorageError as exc:
            return refused(exc)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="volumes_content_download",
        parameters=[OpenApiParameter("Range", str, location=OpenApiParameter.HEADER,
                                     description="one `bytes=first-last` range (resume)")],
        responses={200: OpenApiResponse(description="the volume's bytes "
                                        "(application/octet-stream); header X-Job-Id"),
                   206: OpenApiResponse(description="the requested range"),
                   416: OpenApiResponse(description="range not satisfiable"),
                   409: REFUSED},
    )
    @action(detail=True, methods=["get"], url_path="content")
    def content(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        """Download the volume's content (its file as the host stores it: raw bytes, or
        the qcow2 file), streamed, with HTTP Range support so that downloads resume
        (`curl -C -`). The transfer is a job (id in `X-Job-Id`) with byte progress."""
        volume = self.get_object()
        try:
            size = transfers.content_size(volume)
            byte_range = transfers.parse_range(request.headers.get("Range"), size)
        except transfers.ByteRangeError as exc:
            response = Response({"detail": str(exc)},
                                status=status.HTTP_416_REQUESTED_RANGE_NOT_SATISFIABLE)
            response["Content-Range"] = f"bytes */{exc.size}"
            return response
        except StorageError as exc:
            return refused(exc)
        first, last = byte_range or (0, size - 1)
        length = last - first + 1 if size else 0
        if length == 0:
            return Response(status=status.HTTP_200_OK, headers={"Content-Length": "0"})
        try:
            download = transfers.Download(volume, first=first, length=length,
                                          user=request.user, request=request)
        except StorageError as exc:
            return refused(exc)
        chunks = download.achunks() if isinstance(request._request, ASGIRequest) \
            else download.chunks()
        response = StreamingHttpResponse(
            chunks, status=206 if byte_range else 200, content_type="application/octet-stream")
        response["Content-Length"] = str(length)
        response["Accept-Ranges"] = "bytes"
        response["Content-Disposition"] = f'attachment; filename="{volume.name}"'
        response["X-Job-Id"] = str(download.job.pk)
        if byte_range:
            response["Content-Range"] = f"bytes {first}-{last}/{size}"
        return response

    @extend_schema(
        operation_id="volumes_content_upload",
        request={"application/octet-stream": {"type": "string", "format": "binary"}},
        responses={201: JobSerializer, 409: REFUSED, 411: REFUSED,
                   422: OpenApiResponse(response=JobSerializer, description=(
                       "the image was refused (backing file, external data file, "
                       "encryption, or not the volume's format): refused from its first "
                       "2 MiB, the volume keeps its content; refused once written, the "
                       "volume is deleted; the job's `error` says which"))},
    )
    @content.mapping.put
    @streams_body
    def upload(self, request: Request, pk: str | None = None) -> Response:
        """Replace the volume's content with the request body (raw bytes, not a form),
        streamed to the host as it arrives (never stored on the appliance). Needs
        `Content-Length`; `Expect: 100-continue` lets a client learn of a refusal before
        it sends the body.

        The transfer is a job that runs in this request: it is listed under
        `/api/v1/jobs/` and its progress (bytes, rate, ETA) is pushed to `/ws/jobs/<id>/`
        and `/ws/events/` while the body arrives; the answer, once the upload is done,
        is that job: 201 when it succeeded (`result` gives the volume, format and
        virtual size), 422 when the image was refused, 409 when it failed otherwise
        (then the volume is left empty, never holding a partial image, or as it was if
        no byte had been written). Until the image was checked as a whole the volume
        cannot be attached, cloned or started.
        The volume is re-created first: a raw volume gets the size of the upload, a
        qcow2 one the virtual size of the uploaded image. Uploaded images must be
        self-contained (no backing file, no external data file, not encrypted) and of
        the volume's format."""
        volume = self.get_object()
        length = request.headers.get("Content-Length", "")
        if not length.isdigit():
            return Response({"detail": "Send the image as the request body with a "
                             "Content-Length header."}, status=status.HTTP_411_LENGTH_REQUIRED)
        try:
            outcome = uploads.upload(volume, request._request, int(length),
                                       user=request.user, request=request)
        except StorageError as exc:
            return refused(exc)
        job = outcome.job
        if job.state == "succeeded":
            code = status.HTTP_201_CREATED
        elif outcome.refused:
            code = status.HTTP_422_UNPROCESSABLE_ENTITY
        else:
            code = status.HTTP_409_CONFLICT
        return Response(JobSerializer(job).data, status=code)
