"""REST API for imports: inspect a source, start an import job (thin: see services)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from conversions.v2v import services
from conversions.v2v.export_job import export_file
from conversions.v2v.import_job import FORMATS
from conversions.v2v.proposal import ImportRefused
from conversions.v2v.uploads import receive
from conversions.v2v.xva_output import XVA_KIND
from guests.models import Guest
from xenweb.audit.services import record
from xenweb.jobs.api import accepted
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.serializers import JobSerializer
from xenweb.jobs.visibility import visible_jobs

REFUSED = OpenApiResponse(description="refused, with `detail`")


class SourceSerializer(serializers.Serializer):
    source = serializers.CharField(max_length=1024,
                                   help_text="path relative to $XENWEB_DATA_DIR/import/")


class NicMapSerializer(serializers.Serializer):
    bridge = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,15}$", required=False)
    network = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,64}$", required=False)


class ImportSerializer(SourceSerializer):
    output = serializers.ChoiceField(
        choices=["guest", "xva"], default="guest",
        help_text="guest: define a guest on `host` with volumes in `pool`; xva: write an XVA "
                  "file (the job's result holds its `download` URL), no guest, no volume")
    host = serializers.IntegerField(required=False, help_text="required for output guest")
    pool = serializers.IntegerField(required=False, help_text="required for output guest")
    format = serializers.ChoiceField(choices=FORMATS, default="qcow2")
    name = serializers.CharField(max_length=64, required=False)
    type = serializers.ChoiceField(choices=["hvm", "pv"], required=False)
    vcpus = serializers.IntegerField(min_value=1, max_value=512, required=False)
    memory_mib = serializers.IntegerField(min_value=16, max_value=16 * 1024 * 1024,
                                          required=False)
    network = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,64}$", required=False,
                                     help_text="network for every NIC (default 'default')")
    bridge = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,15}$", required=False)
    nics = NicMapSerializer(many=True, required=False, help_text="per NIC, in source order")
    keep_macs = serializers.BooleanField(default=True)
    compress = serializers.ChoiceField(choices=["", "gzip", "zstd"], default="",
                                       help_text="output xva only")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["output"] == "guest":
            missing = {f: ["This field is required."] for f in ("host", "pool") if f not in attrs}
            if missing:
                raise serializers.ValidationError(missing)
        return attrs


def refused(exc: Exception) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)


class ImportViewSet(viewsets.ViewSet):
    """Import VMware (VMX/VMDK), OVA/OVF and XVA files from the import area as guests."""

    action_permissions = {"create": "guests.add_guest", "inspect": "guests.add_guest",
                          "upload": "guests.add_guest"}

    @extend_schema(request={"application/octet-stream": {"type": "string",
                                                         "format": "binary"}},
                   responses={201: dict, 411: REFUSED, 422: REFUSED})
    def upload(self, request: Request, name: str = "") -> Response:
        """Store the request body (raw bytes, with Content-Length) as `name` inside the
        import area; it can then be inspected and imported as `{"source": name}`.
        Routed in conversions/api_urls.py, with or without a trailing slash."""
        length = request.headers.get("Content-Length", "")
        if not length.isdigit():
            return Response({"detail": "Send the file as the request body with a "
                             "Content-Length header."}, status=status.HTTP_411_LENGTH_REQUIRED)
        try:
            stored = receive(name, request._request, int(length), user=request.user,
                             request=request)
        except ImportRefused as exc:
            return refused(exc)
        return Response(stored, status=status.HTTP_201_CREATED)

    @extend_schema(request=SourceSerializer, responses={200: dict, 422: REFUSED})
    @action(detail=False, methods=["post"])
    def inspect(self, request: Request) -> Response:
        """The proposed guest: name, type, firmware, vCPUs, memory, disks, NICs, warnings."""
        data = SourceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            proposal = services.inspect_source(data.validated_data["source"],
                                               user=request.user, request=request)
        except ImportRefused as exc:
            return refused(exc)
        return Response(proposal.as_dict())

    @extend_schema(request=ImportSerializer, responses={202: JobSerializer, 422: REFUSED})
    def create(self, request: Request) -> Response:
        """Start the import job; its result holds `guest` (the new guest's id), or with
        `output: xva` the `download` URL of the XVA written."""
        data = ImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params: dict[str, Any] = dict(data.validated_data)
        if "nics" in params:
            params["nics"] = [dict(n) for n in params["nics"]]
        try:
            job = services.start_import(params, user=request.user, request=request)
        except ImportRefused as exc:
            return refused(exc)
        return accepted(job)


class ExportSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=["xva", "ova", "raw", "qcow2", "vmdk"])
    compress = serializers.ChoiceField(choices=["", "gzip", "zstd"], default="",
                                       help_text="XVA only")
    disk = serializers.IntegerField(min_value=0, default=0,
                                    help_text="which disk, for raw/qcow2/vmdk")


class GuestExportViewSet(viewsets.GenericViewSet):
    """Export a shut-off guest as XVA or OVA, or one of its disks as raw/qcow2/vmdk."""

    queryset = Guest.objects.select_related("host")
    serializer_class = ExportSerializer
    action_permissions = {"export": "guests.change_guest"}

    @extend_schema(request=ExportSerializer, responses={202: JobSerializer, 422: REFUSED})
    @action(detail=True, methods=["post"])
    def export(self, request: Request, pk: str | None = None) -> Response:
        """A job; its result holds `download`, a URL that streams the file."""
        guest = self.get_object()
        data = ExportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        try:
            job = services.start_export(guest, fmt=params["format"],
                                        compress=params["compress"], disk=params["disk"],
                                        user=request.user, request=request)
        except ImportRefused as exc:
            return refused(exc)
        return accepted(job)


class ExportViewSet(viewsets.GenericViewSet):
    """The files export jobs wrote, streamed to authenticated operators."""

    queryset = Job.objects.filter(kind__in=("guest.export", XVA_KIND), state=JobState.SUCCEEDED)
    # Disk contents can hold secrets: reading them is not for viewers.
    action_permissions = {"download": "guests.change_guest"}

    def get_queryset(self) -> QuerySet[Job]:
        return visible_jobs(self.request.user, super().get_queryset())

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk: str | None = None) -> FileResponse | Response:
        job = self.get_object()
        path = export_file(job)
        if path is None:
            return Response({"detail": "The exported file is gone."},
                            status=status.HTTP_404_NOT_FOUND)
        record("guest.export.download", user=request.user, request=request, target=job,
               file=path.name)
        return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)
