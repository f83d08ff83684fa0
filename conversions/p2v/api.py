"""API: ``POST /api/v1/p2v/inventory/`` (preview), ``POST /api/v1/p2v/`` (start) and
``GET /api/v1/p2v/public-key/`` (the key a source's authorized_keys needs)."""

from __future__ import annotations

from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversions.p2v import job as p2v_job
from conversions.p2v.address import AddressRefused, checked, parse_address
from conversions.p2v.inventory import propose, read_inventory
from conversions.p2v.ssh import IDENTITY, P2VError, Secret, Source, check_password, confirm_host_key
from hosts.models import Host
from storage.models import Pool
from xenweb.audit.services import record
from xenweb.jobs.api import accepted
from xenweb.jobs.serializers import JobSerializer

PERMISSION = "guests.add_guest"  # operators and admins


class ConnectionSerializer(serializers.Serializer):
    address = serializers.CharField(max_length=255)
    port = serializers.IntegerField(min_value=1, max_value=65535, default=22)
    username = serializers.RegexField(r"^[a-z_][a-z0-9_.-]{0,31}$", default="root")
    password = serializers.CharField(
        required=False, allow_blank=True, write_only=True, trim_whitespace=False,
        help_text="log in with this password instead of the appliance's P2V key "
                  "(GET /api/v1/p2v/public-key/); "
                  "used for this request or job only and never stored")

    def validate_address(self, address: str) -> str:
        try:
            return parse_address(address)
        except AddressRefused as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_password(self, password: str) -> Secret | None:
        if not password:
            return None
        problem = check_password(password)
        if problem:
            raise serializers.ValidationError(problem)
        return Secret(password)

    def ssh_source(self) -> Source:
        data = self.validated_data
        return Source(address=data["address"], port=data["port"], username=data["username"],
                      password=data.get("password"))


class InventoryRequestSerializer(ConnectionSerializer):
    host_key_fingerprint = serializers.CharField(
        required=False, help_text="the fingerprint confirmed earlier; omit on first contact")


class StartSerializer(ConnectionSerializer):
    host_key_fingerprint = serializers.CharField(help_text="the fingerprint the user confirmed")
    disks = serializers.ListField(child=serializers.CharField(max_length=255), min_length=1,
                                  help_text="source device paths, e.g. /dev/sda")
    host = serializers.PrimaryKeyRelatedField(queryset=Host.objects.all())
    pool = serializers.PrimaryKeyRelatedField(queryset=Pool.objects.all())
    format = serializers.ChoiceField(
        choices=list(p2v_job.FORMATS), default="raw",
        help_text="volume format: raw, or qcow2 (copied raw, then converted by the host: the "
                  "pool needs room for both while it converts)")
    name = serializers.CharField(max_length=64)
    vcpus = serializers.IntegerField(min_value=1, max_value=512, required=False)
    memory_mib = serializers.IntegerField(min_value=64, required=False)
    network = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,64}$", default="default")
    keep_macs = serializers.BooleanField(default=True)
    bwlimit_mib = serializers.IntegerField(min_value=0, default=0,
                                           help_text="read limit on the source, MiB/s")


class InventoryResponseSerializer(serializers.Serializer):
    host_key_fingerprint = serializers.CharField()
    public_key = serializers.CharField()
    inventory = serializers.DictField()
    proposal = serializers.DictField()


@method_decorator(sensitive_post_parameters("password"), name="dispatch")
class _P2VView(APIView):
    action = "p2v"
    action_permissions = {"p2v": PERMISSION}


class P2VInventoryView(_P2VView):
    """Read the source's hardware (read-only) and propose a guest."""

    @extend_schema(request=InventoryRequestSerializer,
                   responses={200: InventoryResponseSerializer,
                              400: OpenApiResponse(description="the source cannot be read")})
    def post(self, request: Request) -> Response:
        data = InventoryRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        source = data.ssh_source()
        try:
            source = checked(source)  # before any connection
            fingerprint = confirm_host_key(source,
                                           data.validated_data.get("host_key_fingerprint"))
            inventory = read_inventory(source)
        except P2VError as exc:
            record("p2v.inventory", user=request.user, request=request, target_type="p2v",
                   target_label=source.label, result="failed", message=str(exc))
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        record("p2v.inventory", user=request.user, request=request, target_type="p2v",
               target_label=source.label, fingerprint=fingerprint,
               login="key" if source.password is None else "password")
        return Response({"host_key_fingerprint": fingerprint, "public_key": IDENTITY.public_key(),
                         "inventory": inventory.as_dict(), "proposal": propose(inventory)})


class P2VPublicKeyView(_P2VView):
    """The appliance's P2V public key: put it into the source user's authorized_keys (it
    is not the key dom0s trust)."""

    @extend_schema(responses=inline_serializer("P2VPublicKey",
                                               {"public_key": serializers.CharField()}))
    def get(self, request: Request) -> Response:
        return Response({"public_key": IDENTITY.public_key()})


class P2VStartView(_P2VView):
    """Start copying the chosen disks into new volumes; the job's result holds the guest."""

    @extend_schema(request=StartSerializer, responses={202: JobSerializer})
    def post(self, request: Request) -> Response:
        data = StartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        wanted = p2v_job.Request(
            source=data.ssh_source(), fingerprint=values["host_key_fingerprint"],
            disks=values["disks"], host=values["host"], pool=values["pool"],
            name=values["name"], format=values["format"], vcpus=values.get("vcpus"),
            memory_mib=values.get("memory_mib"), network=values["network"],
            keep_macs=values["keep_macs"], bwlimit=values["bwlimit_mib"] * 1024 * 1024)
        try:
            job = p2v_job.start_p2v(wanted, user=request.user, http_request=request)
        except P2VError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return accepted(job)
