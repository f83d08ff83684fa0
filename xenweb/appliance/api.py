from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from xenweb.appliance.sshkeys import public_key


class SshKeyView(APIView):
    """The appliance's public SSH key: paste it into a dom0's /root/.ssh/authorized_keys to
    enrol that host as xen+ssh://root@HOST/system."""

    @extend_schema(responses=inline_serializer("SshKey", {"public_key": serializers.CharField()}))
    def get(self, request: Request) -> Response:
        return Response({"public_key": public_key()})
