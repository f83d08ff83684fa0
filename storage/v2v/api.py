"""REST API for imports: inspect a source, start an import job (thin: see services)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from storage.v2v import services
from storage.v2v.import_job import FORMATS
from storage.v2v.proposal import ImportRefused
from xenweb.jobs.api import accepted
from xenweb.jobs.serializers import JobSerializer

REFUSED = OpenApiResponse(description="refused, with `detail`")


class SourceSerializer(serializers.Serializer):
    source = serializers.CharField(max_length=1024,
                                   help_text="path relative to $XENWEB_DATA_DIR/import/")


class NicMapSerializer(serializers.Serializer):
    bridge = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,15}$", required=False)
    network = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,64}$", required=False)


class ImportSerializer(SourceSerializer):
    host = serializers.IntegerField()
    pool = serializers.IntegerField()
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


def refused(exc: Exception) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)


class ImportViewSet(viewsets.ViewSet):
    """Import VMware (VMX/VMDK), OVA/OVF and XVA files from the import area as guests."""

    action_permissions = {"create": "guests.add_guest", "inspect": "guests.add_guest"}

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
        """Start the import job; its result holds `guest` (the new guest's id)."""
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
