from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from xenweb.accounts.roles import role_of


class MeSerializer(serializers.ModelSerializer):
    # A string, not format "email": a user without an address has "" (a valid account).
    email = serializers.CharField(read_only=True)
    role = serializers.SerializerMethodField()
    permissions = serializers.SerializerMethodField()

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "first_name", "last_name", "role", "permissions"]
        read_only_fields = fields

    def get_role(self, user: object) -> str | None:
        return role_of(user)

    def get_permissions(self, user: object) -> list[str]:
        return sorted(user.get_all_permissions())  # type: ignore[attr-defined]


class MeView(APIView):
    """The current user, with role and permissions."""

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(request.user).data)
