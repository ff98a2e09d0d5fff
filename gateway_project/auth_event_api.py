"""Sign-in events in the management API: read-only, admins only (``/api/v1/auth-events/``)."""

from django.core.validators import validate_ipv46_address
from django_filters import rest_framework as filters
from rest_framework import serializers, viewsets

from gateway_project import datetimes, roles
from gateway_project.models import AuthEvent
from gateway_project.pagination import AppendOnlyCursorPagination


class AuthEventSerializer(serializers.ModelSerializer):
    user_username = serializers.CharField(
        source="user.get_username", read_only=True, default=None, allow_null=True,
        help_text="The account's username; null when the name tried is no account's.",
    )  # fmt: skip

    class Meta:
        model = AuthEvent
        fields = ["id", "created_at", "outcome", "via", "username", "user", "user_username", "address", "user_agent",
                  "detail"]  # fmt: skip
        read_only_fields = fields


class AuthEventFilter(filters.FilterSet):
    since = datetimes.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = datetimes.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    # An address column compares only with addresses (PostgreSQL's inet refused anything else: 500).
    address = filters.CharFilter(validators=[validate_ipv46_address], help_text="An IPv4 or IPv6 address.")

    class Meta:
        model = AuthEvent
        fields = ["since", "until", "outcome", "via", "username", "user", "address"]


class AuthEventViewSet(viewsets.ReadOnlyModelViewSet):
    """Sign-ins, failed and throttled sign-ins, sign-outs and refused API tokens, newest first (admins only).

    ``username`` is the name tried, ``user`` the account it belongs to when there is one,
    ``address`` the client's real address behind the trusted proxies. Passwords and
    tokens are never recorded. Paged by cursor, like every append-only list: each event once
    in a pass, however many are written meanwhile.
    """

    queryset = AuthEvent.objects.select_related("user")
    serializer_class = AuthEventSerializer
    filterset_class = AuthEventFilter
    pagination_class = AppendOnlyCursorPagination
    ordering_fields = ["id"]
    ordering = ["-id"]
    read_roles = roles.USERS
