"""Prices, budgets, budget alerts and usage in the management API: serializers, filtersets and viewsets."""

from contextlib import contextmanager

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from audit.trail import record_update, snapshot
from billing import prices
from billing.models import DEFAULT_PRICE_MODEL, Budget, BudgetAlert, ModelPrice, UsageRecord
from billing.services import acknowledge_alert
from billing.status import budget_status
from gateway_project import datetimes
from gateway_project.api import SEARCHABLE_FILTER_BACKENDS, IdFilter, TrailedModelViewSet
from gateway_project.pagination import AppendOnlyCursorPagination

DUPLICATE_PRICE = "This model already has a price from that moment."
KEEP_DEFAULT = (
    f"The “{DEFAULT_PRICE_MODEL}” price in force prices every unlisted model; "
    f"add a newer “{DEFAULT_PRICE_MODEL}” price instead of removing it."
)


class ModelPriceSerializer(serializers.ModelSerializer):
    effective_from = serializers.DateTimeField(
        required=False, help_text="The price applies from this moment on (a new price: now if not given)."
    )
    in_force = serializers.SerializerMethodField(help_text="Whether this row is the model's price right now.")

    class Meta:
        model = ModelPrice
        fields = ["id", "model", "effective_from", "input_per_million", "output_per_million", "in_force", "updated_at"]
        read_only_fields = ["updated_at"]
        # The (model, effective_from) pair is checked in validate(), so its error names a field.
        validators = []

    def get_in_force(self, price) -> bool:
        annotated = getattr(price, "in_force", None)
        return prices.is_in_force(price) if annotated is None else annotated

    def validate(self, attrs):
        if self.instance is None:
            attrs.setdefault("effective_from", timezone.now())
        current = self.instance or ModelPrice()
        after = ModelPrice(
            pk=current.pk,
            model=attrs.get("model", current.model),
            effective_from=attrs.get("effective_from", current.effective_from),
        )
        twins = ModelPrice.objects.filter(model=after.model, effective_from=after.effective_from)
        if twins.exclude(pk=current.pk).exists():
            raise serializers.ValidationError({"effective_from": DUPLICATE_PRICE})
        if self.instance is not None and prices.unprices_unknown_models(self.instance, after):
            field = "model" if after.model != DEFAULT_PRICE_MODEL else "effective_from"
            raise serializers.ValidationError({field: KEEP_DEFAULT})
        return attrs


class ModelPriceFilter(filters.FilterSet):
    in_force = filters.BooleanFilter(label="Only the rows in force now (true) or only the others (false)")

    class Meta:
        model = ModelPrice
        fields = ["model", "in_force"]


@contextmanager
def _unique_price():
    """Turn a duplicate (model, effective_from) that slipped past validation (a race) into a 400."""
    try:
        yield
    except IntegrityError:
        raise serializers.ValidationError({"effective_from": [DUPLICATE_PRICE]}) from None


class ModelPriceViewSet(TrailedModelViewSet):
    """Prices in USD per million input and output tokens, each from its ``effective_from`` on.

    A price change is a new row with a later ``effective_from``: past usage keeps
    the price it was metered at (each usage row stores its cost), and a row dated in
    the future takes over by itself when its moment comes. ``in_force=true`` lists
    the row each model is priced at now. The ``default`` row prices models with no
    price of their own, so the one in force cannot be removed.
    """

    queryset = ModelPrice.objects.all()
    serializer_class = ModelPriceSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    filterset_class = ModelPriceFilter
    search_fields = ["model"]
    ordering_fields = ["model", "effective_from", "updated_at"]

    def get_queryset(self):
        return prices.with_in_force(super().get_queryset())

    def perform_create(self, serializer):
        with _unique_price():
            super().perform_create(serializer)

    def perform_update(self, serializer):
        with _unique_price():
            super().perform_update(serializer)

    def perform_destroy(self, instance):
        with transaction.atomic():
            # Lock the default rows so two deletions cannot each leave the other as the last one.
            list(ModelPrice.objects.select_for_update().filter(model=DEFAULT_PRICE_MODEL))
            if prices.unprices_unknown_models(instance):
                raise serializers.ValidationError(KEEP_DEFAULT)
            super().perform_destroy(instance)


class BudgetWindowSerializer(serializers.Serializer):
    """Where a budget stands in its current window, counted from the usage rows."""

    period_key = serializers.CharField(read_only=True, help_text="Name of the current window, e.g. m202612.")
    period_start = serializers.DateTimeField(read_only=True)
    period_end = serializers.DateTimeField(read_only=True, help_text="Exclusive: the next window starts here.")
    spent_usd = serializers.DecimalField(max_digits=20, decimal_places=6, read_only=True)
    remaining_usd = serializers.DecimalField(max_digits=20, decimal_places=6, read_only=True)
    percent = serializers.IntegerField(read_only=True, help_text="Share of the limit spent; may pass 100.")
    alerting = serializers.BooleanField(read_only=True, help_text="Spend has reached the alert threshold.")
    exhausted = serializers.BooleanField(read_only=True, help_text="Spend has reached the limit.")


class BudgetStatusSerializer(BudgetWindowSerializer):
    """A budget with where it stands: one row of the status report."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(source="budget.name", read_only=True)
    scope = serializers.ChoiceField(choices=Budget.SCOPES, read_only=True)
    target = serializers.CharField(read_only=True, help_text="What the budget covers, e.g. “Client Acme”.")
    cost_center = serializers.IntegerField(source="budget.cost_center_id", read_only=True, allow_null=True)
    client = serializers.IntegerField(source="budget.client_id", read_only=True, allow_null=True)
    api_key = serializers.IntegerField(source="budget.api_key_id", read_only=True, allow_null=True)
    period = serializers.ChoiceField(choices=Budget.PERIODS, read_only=True)
    mode = serializers.ChoiceField(choices=Budget.MODES, read_only=True)
    limit_usd = serializers.DecimalField(max_digits=14, decimal_places=2, read_only=True)


class BudgetSerializer(serializers.ModelSerializer):
    target = serializers.CharField(source="describe_target", read_only=True, help_text="What the budget covers.")
    alert_webhook_secret = serializers.SerializerMethodField(
        help_text="The webhook's own signing secret, only in the answer to the change that made it (a webhook set "
        "for the first time or moved to another scheme, host or port) and to rotate-webhook-secret: null everywhere "
        "else. Keep it: it is never shown again."
    )
    alert_webhook_secret_legacy = serializers.SerializerMethodField(
        help_text="The webhook is still signed with the shared legacy secret (it was set before webhooks had their "
        "own): rotate its secret."
    )

    class Meta:
        model = Budget
        fields = [
            "id",
            "name",
            "scope",
            "target",
            "cost_center",
            "client",
            "api_key",
            "period",
            "period_days",
            "period_anchor",
            "limit_usd",
            "mode",
            "alert_percent",
            "alert_emails",
            "alert_webhook_url",
            "alert_webhook_secret",
            "alert_webhook_secret_legacy",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {
            "cost_center": {"help_text": "The cost center of a cost_center budget; null for other scopes."},
            "client": {"help_text": "The client of a client budget; null for other scopes."},
            "api_key": {"help_text": "The key of a key budget; null for other scopes."},
            "period_days": {"help_text": "Length of a custom period in days; ignored for other periods."},
            "period_anchor": {"help_text": "First day of a custom period's first cycle (today if not given)."},
        }

    def get_alert_webhook_secret(self, budget) -> str | None:
        return budget.issued_webhook_secret or None

    def get_alert_webhook_secret_legacy(self, budget) -> bool:
        return budget.webhook_secret_legacy

    def validate(self, attrs):
        """Check the budget as a whole with the model's rules (the scope's target, a custom period's length)."""
        budget = Budget()
        if self.instance is not None:
            for field in Budget._meta.concrete_fields:
                setattr(budget, field.attname, getattr(self.instance, field.attname))
        for name, value in attrs.items():
            setattr(budget, name, value)
        try:
            budget.clean()
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None
        # clean() settles what the period implies: no days or anchor unless custom, today as the default anchor.
        attrs["period_days"], attrs["period_anchor"] = budget.period_days, budget.period_anchor
        return attrs


class WebhookSecretSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    alert_webhook_secret = serializers.CharField(read_only=True, help_text="Shown in this answer only.")


class BudgetDetailSerializer(BudgetSerializer):
    status = serializers.SerializerMethodField(help_text="Where the budget stands in its current window.")

    class Meta(BudgetSerializer.Meta):
        fields = [*BudgetSerializer.Meta.fields, "status"]

    @extend_schema_field(BudgetWindowSerializer)
    def get_status(self, budget):
        return BudgetWindowSerializer(budget_status(budget)).data


class BudgetFilter(filters.FilterSet):
    class Meta:
        model = Budget
        fields = ["scope", "client", "cost_center", "api_key", "period", "mode", "is_active"]


class BudgetStatusFilter(filters.FilterSet):
    """The status report covers active budgets only, so it has no ``is_active`` filter."""

    class Meta:
        model = Budget
        fields = ["scope", "client", "cost_center", "api_key", "period", "mode"]


@extend_schema_view(
    list=extend_schema(responses=BudgetSerializer(many=True)),
    create=extend_schema(request=BudgetSerializer, responses={201: BudgetDetailSerializer}),
    update=extend_schema(request=BudgetSerializer, responses=BudgetDetailSerializer),
    partial_update=extend_schema(request=BudgetSerializer, responses=BudgetDetailSerializer),
)
class BudgetViewSet(TrailedModelViewSet):
    """Spending limits in USD over a period, for the organization, a cost center, a client or a key.

    Several budgets may apply to one target (a daily and a monthly, say); a request
    must fit every active one. A hard budget refuses with 402 once spent, a soft one
    only alerts. A budget's detail carries its ``status`` in the current window;
    ``GET budgets/status/`` lists that of every active budget.
    """

    queryset = Budget.objects.select_related("cost_center", "client", "api_key__client")
    filterset_class = BudgetFilter
    ordering_fields = ["scope", "period", "limit_usd", "created_at", "updated_at"]

    def get_serializer_class(self):
        if self.action in ("status", "status_list"):
            return BudgetStatusSerializer
        return BudgetSerializer if self.action == "list" else BudgetDetailSerializer

    @extend_schema(request=None, responses=WebhookSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-webhook-secret")
    def rotate_webhook_secret(self, request, pk=None):
        """Give the budget's webhook a new signing secret, shown in this answer only; the old one stops at once."""
        budget = self.get_object()
        if not budget.alert_webhook_url:
            raise serializers.ValidationError({"alert_webhook_url": "This budget has no webhook."})
        before = snapshot(budget)
        with transaction.atomic():
            secret = budget.rotate_webhook_secret()
            record_update(request.user, "api", budget, before, action="rotate_webhook_secret")
        return Response(WebhookSecretSerializer({"id": budget.pk, "alert_webhook_secret": secret}).data)

    @extend_schema(responses=BudgetStatusSerializer)
    @action(detail=True, methods=["get"])
    def status(self, request, pk=None):
        """Where this budget stands in its current window."""
        return Response(BudgetStatusSerializer(budget_status(self.get_object())).data)

    @extend_schema(responses=BudgetStatusSerializer(many=True))
    @action(detail=False, methods=["get"], url_path="status", filterset_class=BudgetStatusFilter)
    def status_list(self, request):
        """Where every active budget stands in its current window (filter by scope, target, period or mode)."""
        budgets = self.paginate_queryset(self.filter_queryset(self.get_queryset().filter(is_active=True)))
        statuses = [budget_status(budget) for budget in budgets]
        return self.get_paginated_response(BudgetStatusSerializer(statuses, many=True).data)


class BudgetAlertSerializer(serializers.ModelSerializer):
    scope = serializers.ChoiceField(source="budget.scope", choices=Budget.SCOPES, read_only=True)
    target = serializers.CharField(source="budget.describe_target", read_only=True)
    acknowledged = serializers.SerializerMethodField(help_text="Whether someone has acknowledged the alert.")

    class Meta:
        model = BudgetAlert
        fields = [
            "id",
            "budget",
            "scope",
            "target",
            "period_key",
            "period_start",
            "period_end",
            "threshold_percent",
            "spent_usd",
            "limit_usd",
            "created_at",
            "email_status",
            "webhook_status",
            "webhook_attempts",
            "webhook_error",
            "acknowledged",
            "acknowledged_at",
        ]
        read_only_fields = fields

    def get_acknowledged(self, alert) -> bool:
        return alert.acknowledged_at is not None


class BudgetAlertFilter(filters.FilterSet):
    scope = filters.ChoiceFilter(field_name="budget__scope", choices=Budget.SCOPES, label="The budget's scope")
    acknowledged = filters.BooleanFilter(field_name="acknowledged_at", lookup_expr="isnull", exclude=True)
    created_after = datetimes.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label="Created at or after")
    created_before = datetimes.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", label="Created before")

    class Meta:
        model = BudgetAlert
        fields = ["budget", "scope", "acknowledged", "threshold_percent", "created_after", "created_before"]


class BudgetAlertViewSet(viewsets.ReadOnlyModelViewSet):
    """Budgets that crossed their alert threshold or their limit, once per period and threshold; newest first.

    The gateway raises them; people acknowledge them with ``POST alerts/{id}/acknowledge/``.
    New alerts keep coming, so the list is paged by cursor.
    """

    queryset = BudgetAlert.objects.select_related("budget__cost_center", "budget__client", "budget__api_key__client")
    serializer_class = BudgetAlertSerializer
    filterset_class = BudgetAlertFilter
    pagination_class = AppendOnlyCursorPagination
    ordering_fields = ["id"]
    ordering = ["-id"]

    @extend_schema(request=None, responses=BudgetAlertSerializer)
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        """Mark the alert as seen; acknowledging it again keeps the first time."""
        alert = self.get_object()
        before = snapshot(alert)
        with transaction.atomic():
            acknowledge_alert(alert)
            record_update(request.user, "api", alert, before, action="acknowledge")
        return Response(self.get_serializer(alert).data)


class UsageRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "request_id",
            "created_at",
            "cost_center",
            "client",
            "api_key",
            "agent",
            "model",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "default_priced",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "cost_center": {"help_text": "The client's cost center when the request was made."},
            "default_priced": {"help_text": "The model had no price of its own: priced at the default price."},
        }


class UsageRecordFilter(filters.FilterSet):
    # Plain ids: usage outlives deleted clients, keys and cost centers, so their rows may be gone.
    cost_center = IdFilter(field_name="cost_center_id")
    client = IdFilter(field_name="client_id")
    api_key = IdFilter(field_name="api_key_id")
    created_after = datetimes.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label="Created at or after")
    created_before = datetimes.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", label="Created before")

    class Meta:
        model = UsageRecord
        fields = [
            "cost_center",
            "client",
            "api_key",
            "agent",
            "model",
            "default_priced",
            "request_id",
            "created_after",
            "created_before",
        ]


class UsageRecordViewSet(viewsets.ReadOnlyModelViewSet):
    """Tokens and cost of each metered request, newest first (as written, paged by cursor); read-only here."""

    queryset = UsageRecord.objects.all()
    serializer_class = UsageRecordSerializer
    filterset_class = UsageRecordFilter
    pagination_class = AppendOnlyCursorPagination
    ordering_fields = ["id"]
    ordering = ["-id"]
