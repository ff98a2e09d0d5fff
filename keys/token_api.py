"""The caller's own management API token: see when it expires, rotate it."""

from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.trail import record_create, record_update, snapshot
from gateway_project import roles
from keys.api_tokens import TokenRefused, rotate_token
from keys.models import ApiToken

NOT_BY_TOKEN = "You are not calling with an API token: call with `Authorization: Token <token>` to see or rotate it."


class ApiTokenSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.get_username", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["prefix", "user", "created_at", "expires_at"]
        read_only_fields = fields
        extra_kwargs = {"expires_at": {"help_text": "After this the token gets 401; null: it never expires."}}


class IssuedApiTokenSerializer(ApiTokenSerializer):
    """A token as issued: the only representation that carries the raw secret."""

    token = serializers.SerializerMethodField(help_text="The raw token. Shown in this response only: store it now.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]

    def get_token(self, token) -> str:
        return self.context["raw_token"]


class CallerTokenView(APIView):
    """Base: the token the request was authenticated with; every role may see and rotate its own."""

    read_roles = write_roles = roles.READ

    def caller_token(self, request) -> ApiToken:
        if not isinstance(request.auth, ApiToken):
            raise ValidationError(NOT_BY_TOKEN)
        return request.auth


class CurrentTokenView(CallerTokenView):
    @extend_schema(
        summary="The token you call with",
        responses={200: ApiTokenSerializer, 400: OpenApiResponse(description="Not called with an API token.")},
    )
    def get(self, request):
        """Its prefix, when it was issued and when it expires (rotate it before then)."""
        return Response(ApiTokenSerializer(self.caller_token(request)).data)


class RotateTokenView(CallerTokenView):
    @extend_schema(
        summary="Rotate the token you call with",
        request=None,
        responses={
            201: IssuedApiTokenSerializer,
            400: OpenApiResponse(description="Not called with an API token."),
            401: OpenApiResponse(description="The token was rotated or revoked meanwhile, or has expired."),
        },
    )
    def post(self, request):
        """Issue a new token for as long as this one was issued for, from now; this one stops working at once.

        The new token is in this response only.
        """
        token = self.caller_token(request)
        before = snapshot(token)
        try:
            with transaction.atomic():
                new, raw = rotate_token(token)
                record_update(request.user, "api", token, before, action="rotate")
                record_create(request.user, "api", new)
        except TokenRefused as refusal:
            raise AuthenticationFailed(str(refusal)) from None
        body = IssuedApiTokenSerializer(new, context={"request": request, "raw_token": raw}).data
        return Response(body, status=status.HTTP_201_CREATED)
