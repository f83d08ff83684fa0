from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from guests import devices, services
from guests.api.snapshots import PERMISSIONS as SNAPSHOT_PERMISSIONS
from guests.api.snapshots import SnapshotActions
from guests.create import create_from_request
from guests.create_request import CreateGuestSerializer
from guests.errors import GuestError, GuestGone
from guests.lifecycle import ACTIONS
from guests.models import Guest
from guests.save_images import SaveImageRefused
from storage.models import Volume
from xenweb.ids import parse_id
from xenweb.jobs.api import accepted
from xenweb.jobs.models import Job
from xenweb.jobs.serializers import JobSerializer


class GuestSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    host_name = serializers.CharField(source="host.name", read_only=True)
    type = serializers.CharField(source="type_label", read_only=True)
    disks = serializers.SerializerMethodField()
    nics = serializers.SerializerMethodField()

    class Meta:
        model = Guest
        fields = ["id", "url", "uuid", "name", "host", "host_name", "state", "os_type", "type",
                  "vcpus", "memory_mib", "max_memory_mib", "is_privileged", "autostart",
                  "has_managed_save", "saved_volume",
                  "disks", "nics", "updated_at"]
        read_only_fields = fields

    def get_url(self, guest: Guest) -> str:
        return reverse("api:guest-detail", args=[guest.pk])

    def get_disks(self, guest: Guest) -> list[dict[str, Any]]:
        return guest.devices.get("disks", [])

    def get_nics(self, guest: Guest) -> list[dict[str, Any]]:
        return guest.devices.get("nics", [])


class GuestUpdateSerializer(serializers.Serializer):
    memory_mib = serializers.IntegerField(min_value=1, required=False,
                                          help_text="balloon to this size")
    vcpus = serializers.IntegerField(min_value=1, required=False,
                                     help_text="up to the guest's maximum")


class ChangeResultSerializer(serializers.Serializer):
    applied = serializers.ChoiceField(choices=["live", "next boot"])
    guest = GuestSerializer()


class AttachDiskSerializer(serializers.Serializer):
    volume = serializers.IntegerField(help_text="id of a volume on the guest's host")
    shareable = serializers.BooleanField(
        default=False, help_text="several running guests may write it (cluster filesystems)")
    readonly = serializers.BooleanField(default=False, help_text="attach read-only")


class AttachNicSerializer(serializers.Serializer):
    bridge = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,15}$", required=False, default="")
    network = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,64}$", required=False, default="")
    mac = serializers.RegexField(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$", required=False,
                                 default="")


class ActionSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False, help_text="autostart: on or off")
    timeout = serializers.IntegerField(required=False, min_value=5, max_value=3600,
                                       help_text="shutdown: seconds to wait")
    pool = serializers.IntegerField(
        required=False, min_value=1,
        help_text="save: id of a file pool (dir, fs, netfs) of the guest's host for the save "
                  "image volume; by default the app chooses one")
    volume = serializers.IntegerField(
        required=False, min_value=1,
        help_text="restore: id of a volume on the guest's host holding a save image of this "
                  "guest; by default the guest's own last save")

    # Which action takes which parameter; anything else is refused, not ignored.
    ACCEPTS = {"autostart": {"enabled"}, "shutdown": {"timeout"}, "save": {"pool"},
               "restore": {"volume"}}
    # Sent by form posts; not a parameter.
    IGNORED = {"csrfmiddlewaretoken"}

    def __init__(self, *args: Any, action: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.action = action

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        sent = set(getattr(self.initial_data, "keys", lambda: [])()) - self.IGNORED
        if "path" in sent and self.action in ("save", "restore"):
            raise serializers.ValidationError({"path": [
                "Save and restore take no host path: the save image is a volume the app "
                "creates (choose its pool with `pool`), and a restore reads the guest's own "
                "save or a volume chosen by id (`volume`)."]})
        unknown = sent - self.ACCEPTS.get(self.action, set())
        if unknown:
            raise serializers.ValidationError({
                key: [f"`{self.action}` takes no `{key}`."] for key in sorted(unknown)})
        return attrs


# The class attribute of each action; `destroy` is taken by DELETE, so force-off is
# `destroy_now` in Python but /destroy/ in the URL.
ACTION_ATTRS = {name: ("destroy_now" if name == "destroy" else name)
                for name in ACTIONS if name != "delete"}


def _action_view(name: str) -> Any:
    def view(self: GuestViewSet, request: Request, pk: str | None = None) -> Response:
        return self.run_action(request, name)

    view.__name__ = ACTION_ATTRS[name]  # DRF finds the method again by this name
    view.__doc__ = f"{name.capitalize()} the guest."
    view = action(detail=True, methods=["post"], url_path=name)(view)
    return extend_schema(
        request=ActionSerializer, operation_id=f"guests_action_{name}",
        description=f"`{name}` the guest. Answers the guest (200) or, for slow actions, "
                    "the job (202); 409 when the guest's state forbids it.",
        responses={200: GuestSerializer, 202: JobSerializer,
                   400: OpenApiResponse(description="bad parameters, with the reason"),
                   409: OpenApiResponse(description="refused, with `detail`")},
    )(view)


@extend_schema(parameters=[
    OpenApiParameter("host", int, description="host id"),
    OpenApiParameter("state", str, description="running, paused, shutoff, …"),
    OpenApiParameter("name", str, description="part of the name"),
])
class GuestViewSet(SnapshotActions, viewsets.ModelViewSet):
    """Guests of all hosts, from the inventory cache (libvirt stays the source of truth)."""

    queryset = Guest.objects.select_related("host")
    serializer_class = GuestSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_permissions = {
        **{attr: "guests.change_guest" for attr in ACTION_ATTRS.values()},
        **{name: "guests.change_guest" for name in ("attach_disk", "detach_disk",
                                                    "attach_nic", "detach_nic")},
        **SNAPSHOT_PERMISSIONS,
    }

    def get_queryset(self) -> QuerySet[Guest]:
        queryset = super().get_queryset()
        params = self.request.query_params
        if params.get("host"):
            host_id = parse_id(params["host"])
            queryset = queryset.filter(host_id=host_id) if host_id else queryset.none()
        if params.get("state"):
            queryset = queryset.filter(state=params["state"])
        if params.get("name"):
            queryset = queryset.filter(name__icontains=params["name"])
        return queryset

    def run_action(self, request: Request, name: str) -> Response:
        guest = self.get_object()
        if not isinstance(request.data, dict):
            return Response({"detail": "Send the parameters as a JSON object."},
                            status=status.HTTP_400_BAD_REQUEST)
        params = ActionSerializer(data=request.data, action=name)
        params.is_valid(raise_exception=True)
        try:
            outcome = services.request_action(guest, name, user=request.user, request=request,
                                              **params.validated_data)
        except SaveImageRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        except GuestError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        if isinstance(outcome, Job):
            return accepted(outcome)
        return Response(GuestSerializer(outcome).data)

    @extend_schema(request=CreateGuestSerializer, responses={201: GuestSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Define a new guest (it is not started)."""
        guest = create_from_request(request)
        return Response(GuestSerializer(guest).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=GuestUpdateSerializer, responses={200: GuestSerializer})
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Balloon memory and/or change vCPUs (live when running, and in the definition)."""
        guest = self.get_object()
        data = GuestUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            if "memory_mib" in data.validated_data:
                guest = services.set_memory(guest, data.validated_data["memory_mib"],
                                            user=request.user, request=request)
            if "vcpus" in data.validated_data:
                devices.set_vcpus(guest, data.validated_data["vcpus"], user=request.user,
                                  request=request)
        except GuestGone as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
        except GuestError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(GuestSerializer(guest).data)

    def _changed(self, guest: Guest, call: Any) -> Response:
        try:
            applied = call()
        except GuestError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        guest.refresh_from_db()
        return Response({"applied": applied, "guest": GuestSerializer(guest).data})

    @extend_schema(request=AttachDiskSerializer, responses={200: ChangeResultSerializer})
    @action(detail=True, methods=["post"], url_path="disks")
    def attach_disk(self, request: Request, pk: str | None = None) -> Response:
        """Attach a volume as a new disk (hot where the hypervisor can, else next boot)."""
        guest = self.get_object()
        data = AttachDiskSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        volume = Volume.objects.filter(pk=data.validated_data["volume"]).first()
        if volume is None:
            return Response({"detail": "No such volume."}, status=status.HTTP_404_NOT_FOUND)
        return self._changed(guest, lambda: devices.attach_volume(
            guest, volume, shareable=data.validated_data["shareable"],
            readonly=data.validated_data["readonly"], user=request.user, request=request))

    @extend_schema(request=None, responses={200: ChangeResultSerializer})
    @action(detail=True, methods=["delete"], url_path=r"disks/(?P<target>[a-z]{2,4}\d*)")
    def detach_disk(self, request: Request, pk: str | None = None, target: str = "") -> Response:
        """Detach the disk with this target (e.g. xvdb); the volume is kept."""
        guest = self.get_object()
        return self._changed(guest, lambda: devices.detach_disk(
            guest, target, user=request.user, request=request))

    @extend_schema(request=AttachNicSerializer, responses={200: ChangeResultSerializer})
    @action(detail=True, methods=["post"], url_path="nics")
    def attach_nic(self, request: Request, pk: str | None = None) -> Response:
        """Add a network interface on a bridge or network (MAC generated unless given)."""
        guest = self.get_object()
        data = AttachNicSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._changed(guest, lambda: devices.attach_nic(
            guest, user=request.user, request=request, **data.validated_data))

    @extend_schema(request=None, responses={200: ChangeResultSerializer})
    @action(detail=True, methods=["delete"],
            url_path=r"nics/(?P<mac>([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2})")
    def detach_nic(self, request: Request, pk: str | None = None, mac: str = "") -> Response:
        """Remove the network interface with this MAC address."""
        guest = self.get_object()
        return self._changed(guest, lambda: devices.detach_nic(
            guest, mac, user=request.user, request=request))

    @extend_schema(parameters=[
        OpenApiParameter("confirm", str, required=True, description="the guest's name"),
        OpenApiParameter("delete_volumes", bool, description="also delete its disks"),
    ], responses={204: None, 409: OpenApiResponse(description="refused, with `detail`")})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Delete the guest's definition (and optionally its disks)."""
        guest = self.get_object()
        try:
            services.delete_guest(
                guest, confirm_name=request.query_params.get("confirm", ""),
                delete_volumes=request.query_params.get("delete_volumes") in ("1", "true"),
                user=request.user, request=request,
            )
        except GuestError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


# One route per lifecycle action, from the one list of actions (guests.lifecycle.ACTIONS).
for _name, _attr in ACTION_ATTRS.items():
    setattr(GuestViewSet, _attr, _action_view(_name))
