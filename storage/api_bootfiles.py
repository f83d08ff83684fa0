"""API: a host's boot files directory, under the host's URL (storage serves it as a pool).

The actions keep the URLs and route names they had on hosts' HostViewSet (storage.api_urls
registers this view set under "hosts" with the basename "host" in a router of its own).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from hosts.api import HostSerializer
from hosts.models import Host
from hosts.virt import VirtError
from storage import bootfiles


class BootFilesDirSerializer(serializers.Serializer):
    boot_files_dir = serializers.CharField(max_length=1024, allow_blank=True, help_text=(
        "A directory on the host holding guest kernels and initrds (e.g. /var/lib/xen/boot; "
        "it must exist there), served as a storage pool; operators boot guests with its "
        "files by name. Empty: none."))


class BootFilesSerializer(serializers.Serializer):
    boot_files_dir = serializers.CharField()
    files = serializers.ListField(child=serializers.CharField())


class HostBootFilesViewSet(viewsets.GenericViewSet):
    """The boot files directory of a host."""

    queryset = Host.objects.all()
    serializer_class = HostSerializer
    action_permissions = {"boot_files_dir": "hosts.change_host"}

    @extend_schema(request=BootFilesDirSerializer, responses={200: HostSerializer})
    @action(detail=True, methods=["put"], url_path="boot-files-dir")
    def boot_files_dir(self, request: Request, pk: str | None = None) -> Response:
        """Set the host's boot files directory (administrators; empty: none)."""
        data = BootFilesDirSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            host = bootfiles.set_boot_files_dir(
                self.get_object(), data.validated_data["boot_files_dir"], user=request.user,
                request=request)
        except (VirtError, bootfiles.BootFilesError) as exc:
            return Response({"boot_files_dir": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(HostSerializer(host).data)

    @extend_schema(request=None, responses={200: BootFilesSerializer})
    @action(detail=True, methods=["get"], url_path="boot-files")
    def boot_files(self, request: Request, pk: str | None = None) -> Response:
        """The files of the host's boot files directory, listed on the host now: the names
        to give as kernel_file / initrd_file when creating a guest."""
        host = self.get_object()
        try:
            files = bootfiles.refresh_boot_files(host)
        except VirtError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"boot_files_dir": host.boot_files_dir, "files": files})
