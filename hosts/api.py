from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from hosts import services
from hosts.models import Host
from hosts.virt import VirtError


class HostSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Host
        fields = ["id", "url", "name", "uri", "is_lab", "state", "state_since", "last_error",
                  "hostname", "hypervisor_type", "hypervisor_version", "libvirt_version",
                  "arch", "cpus", "memory_mib", "capabilities", "migration_uri",
                  "boot_files_dir"]
        read_only_fields = fields

    def get_url(self, host: Host) -> str:
        return reverse("api:host-detail", args=[host.pk])


class HostCreateSerializer(serializers.Serializer):
    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    uri = serializers.CharField(max_length=500)


class NetworkSerializer(serializers.Serializer):
    name = serializers.CharField()
    uuid = serializers.CharField(read_only=True)
    active = serializers.BooleanField(read_only=True)
    autostart = serializers.BooleanField(read_only=True)
    bridge = serializers.CharField()
    forward_mode = serializers.CharField(read_only=True,
                                         help_text="empty: isolated; bridge, nat, route…")


class MaintenanceSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()


class MigrationUriSerializer(serializers.Serializer):
    migration_uri = serializers.CharField(max_length=500, allow_blank=True, help_text=(
        "How other hosts' libvirtd reach this host when migrating to it, e.g. "
        "xen+ssh://root@10.0.0.2/system on a migration network; empty: the host's URI."))


class HostKeySerializer(serializers.Serializer):
    fingerprint = serializers.CharField(max_length=100, help_text=(
        "SHA256:… of the key the host offers now, compared by the administrator on the host "
        "itself (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)"))


class HostKeyStatusSerializer(serializers.Serializer):
    pinned = serializers.CharField(allow_null=True, help_text="the fingerprint trusted now")


class HostViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                  viewsets.GenericViewSet):
    """Hypervisor hosts, each reached through its libvirt URI."""

    queryset = Host.objects.all()
    serializer_class = HostSerializer
    action_permissions = {"maintenance": "hosts.change_host",
                          "host_key": services.REPIN_PERMISSION,
                          "migration_uri": "hosts.change_host"}

    @extend_schema(methods=["GET"], responses={200: NetworkSerializer(many=True)})
    @extend_schema(methods=["GET"], responses={200: NetworkSerializer(many=True)},
                   filters=False)
    @extend_schema(methods=["POST"], request=NetworkSerializer,
                   responses={201: NetworkSerializer})
    @action(detail=True, methods=["get", "post"], pagination_class=None)
    def networks(self, request: Request, pk: str | None = None) -> Response:
        """The host's networks and bridges; POST (administrators) creates an isolated one."""
        host = self.get_object()
        try:
            if request.method == "POST":
                data = NetworkSerializer(data=request.data)
                data.is_valid(raise_exception=True)
                created = services.create_isolated_network(
                    host, data.validated_data["name"], data.validated_data["bridge"],
                    user=request.user, request=request)
                return Response(NetworkSerializer(created).data,
                                status=status.HTTP_201_CREATED)
            return Response(NetworkSerializer(services.networks(host), many=True).data)
        except VirtError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)

    @extend_schema(request=HostCreateSerializer, responses={201: HostSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Enrol a host: connects first and says exactly what failed."""
        data = HostCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            host = services.enrol_host(user=request.user, request=request, **data.validated_data)
        except (VirtError, services.HostError) as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(HostSerializer(host).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MaintenanceSerializer, responses={200: HostSerializer})
    @action(detail=True, methods=["post"])
    def maintenance(self, request: Request, pk: str | None = None) -> Response:
        """Maintenance mode on/off: no new guests are placed on a host in maintenance."""
        data = MaintenanceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        host = services.set_maintenance(self.get_object(), data.validated_data["enabled"],
                                        user=request.user, request=request)
        return Response(HostSerializer(host).data)

    @extend_schema(request=MigrationUriSerializer, responses={200: HostSerializer})
    @action(detail=True, methods=["put"], url_path="migration-uri")
    def migration_uri(self, request: Request, pk: str | None = None) -> Response:
        """Set how other hosts reach this one for migration (empty: its own URI)."""
        data = MigrationUriSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            host = services.set_migration_uri(self.get_object(),
                                              data.validated_data["migration_uri"],
                                              user=request.user, request=request)
        except (VirtError, services.HostError) as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(HostSerializer(host).data)

    @extend_schema(methods=["GET"], responses={200: HostKeyStatusSerializer})
    @extend_schema(methods=["POST"], request=HostKeySerializer,
                   responses={200: HostKeyStatusSerializer})
    @action(detail=True, methods=["get", "post"], url_path="host-key")
    def host_key(self, request: Request, pk: str | None = None) -> Response:
        """The SSH host key the appliance trusts for this host; POST (administrators)
        re-pins it to the key the host offers now, which must match ``fingerprint``
        (audited with the old and the new fingerprint)."""
        host = self.get_object()
        if request.method == "POST":
            data = HostKeySerializer(data=request.data)
            data.is_valid(raise_exception=True)
            try:
                services.repin_host_key(host, data.validated_data["fingerprint"],
                                        user=request.user, request=request)
            except PermissionError as exc:
                return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
            except services.HostError as exc:
                return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"pinned": services.pinned_host_key(host)})
