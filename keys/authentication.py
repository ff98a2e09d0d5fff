"""The management API's token authentication: ``Authorization: Token <token>``, checked against hashed tokens."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from keys.api_tokens import TokenRefused, authenticate


class ApiTokenAuthentication(BaseAuthentication):
    """DRF's ``TokenAuthentication`` header, against ``keys.ApiToken``: hashed, expiring, rotatable.

    An expired, rotated or revoked token gets a 401 that says which, and when.
    """

    keyword = "Token"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Invalid token header: give `Authorization: Token <token>`.")
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid token header: a token is plain ASCII.") from None
        try:
            token = authenticate(raw)
        except TokenRefused as refusal:
            raise AuthenticationFailed(str(refusal)) from None
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """The schema's name for it: an ``Authorization`` header with the ``Token`` prefix."""

    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix=ApiTokenAuthentication.keyword
        )
