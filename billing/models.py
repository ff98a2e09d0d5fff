from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from gateway_project.credentials import EncryptedTextField, new_signing_secret, same_origin
from gateway_project.outbound import validate_webhook_url

DEFAULT_PRICE_MODEL = "default"
NANOS_PER_USD = 1_000_000_000


class ModelPrice(models.Model):
    """USD per million input and output tokens for one model from ``effective_from`` on.

    A price change is a new row with a later date, so usage is always priced at the
    rate in force when it happened; the ``default`` model prices every unlisted one.
    """

    model = models.CharField(max_length=200)
    effective_from = models.DateTimeField(default=timezone.now, help_text="The price applies from this moment on.")
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6, validators=[MinValueValidator(0)])
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6, validators=[MinValueValidator(0)])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "effective_from"],
                name="one_price_per_model_and_date",
                violation_error_message="This model already has a price from that moment.",
            )
        ]

    def __str__(self):
        return f"{self.model}: ${self.input_per_million}/${self.output_per_million} per 1M"


class Budget(models.Model):
    """A spending limit in USD over a recurring period, for the organization, a cost center, a client or a key.

    A request must fit every active budget that applies to it. A hard budget refuses
    with 402 once it cannot cover a request's worst-case cost; a soft one only alerts.
    Alerts fire once per period at ``alert_percent`` and at 100%.
    """

    ORGANIZATION, COST_CENTER, CLIENT, KEY = "organization", "cost_center", "client", "key"
    SCOPES = [(ORGANIZATION, "Organization"), (COST_CENTER, "Cost center"), (CLIENT, "Client"), (KEY, "API key")]
    DAILY, WEEKLY, MONTHLY, CUSTOM = "daily", "weekly", "monthly", "custom"
    PERIODS = [(DAILY, "Daily"), (WEEKLY, "Weekly (from Monday)"), (MONTHLY, "Monthly"), (CUSTOM, "Custom length")]
    HARD, SOFT = "hard", "soft"
    MODES = [(HARD, "Hard: refuse with 402"), (SOFT, "Soft: allow and alert")]
    SCOPE_PHRASES = {COST_CENTER: "a cost center", CLIENT: "a client", KEY: "an API key"}
    # The field that names the budget's target, for each scope (the organization has none).
    TARGET_FIELDS = {COST_CENTER: "cost_center", CLIENT: "client", KEY: "api_key"}

    name = models.CharField(max_length=200, blank=True)
    scope = models.CharField(max_length=20, choices=SCOPES, default=CLIENT)
    cost_center = models.ForeignKey(
        "keys.CostCenter", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    client = models.ForeignKey("keys.Client", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    api_key = models.ForeignKey("keys.ApiKey", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    period = models.CharField(max_length=10, choices=PERIODS, default=MONTHLY)
    period_days = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(3660)],
        help_text="Length of a custom period in days.",
    )  # fmt: skip
    period_anchor = models.DateField(
        null=True, blank=True, help_text="The day a custom period's first cycle starts; cycles follow back to back."
    )
    limit_usd = models.DecimalField(max_digits=14, decimal_places=2, validators=[MinValueValidator(0)])
    mode = models.CharField(max_length=4, choices=MODES, default=HARD)
    alert_percent = models.PositiveSmallIntegerField(
        default=80, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Alert when spend crosses this share of the limit (and again at 100%).",
    )  # fmt: skip
    alert_emails = models.CharField(
        max_length=500, blank=True, help_text="Comma-separated addresses that get the alerts by e-mail."
    )
    alert_webhook_url = models.URLField(
        max_length=500,
        blank=True,
        validators=[validate_webhook_url],
        help_text="Alerts are POSTed here as JSON, signed with HMAC-SHA256 under the webhook's own secret.",
    )
    # The receiver's own signing key: made when a webhook is first set or moves to another scheme, host or port,
    # shown once, rotatable; encrypted at rest. Empty with a webhook: one made before receivers had their own
    # secrets, still signed with the shared legacy GATEWAY_WEBHOOK_SECRET until it is rotated.
    alert_webhook_secret = EncryptedTextField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "id"]
        indexes = [models.Index(fields=["scope", "is_active"])]

    def __str__(self):
        return f"{self.describe_target()}: ${self.limit_usd} {self.get_period_display().lower()} ({self.mode})"

    def save(self, *args, **kwargs):
        """A new webhook receiver (first set, or another scheme, host or port) gets its own new secret; a budget
        without a webhook keeps none."""
        self.issued_webhook_secret = ""
        fields = kwargs.get("update_fields")
        if fields is None or "alert_webhook_url" in fields:
            if not self.alert_webhook_url:
                self.alert_webhook_secret = ""
            elif self._new_webhook_receiver():
                self.alert_webhook_secret = self.issued_webhook_secret = new_signing_secret()
            if fields is not None:
                kwargs["update_fields"] = [*fields, "alert_webhook_secret"]
        super().save(*args, **kwargs)

    @property
    def limit_nanos(self) -> int:
        return int(self.limit_usd * NANOS_PER_USD)

    @property
    def target(self):
        field = self.TARGET_FIELDS.get(self.scope)
        return getattr(self, field) if field else None

    def describe_target(self) -> str:
        if self.scope == self.ORGANIZATION:
            return "Organization"
        target = self.target
        return f"{self.get_scope_display()} {target}" if target is not None else self.get_scope_display()

    def clean(self):
        errors = {}
        for scope, field in self.TARGET_FIELDS.items():
            has = getattr(self, f"{field}_id") is not None
            if scope == self.scope and not has:
                phrase = self.SCOPE_PHRASES[scope]
                errors[field] = f"{phrase[0].upper()}{phrase[1:]} budget needs one."
            elif scope != self.scope and has:
                errors[field] = f"Only {self.SCOPE_PHRASES[scope]} budget names one."
        if self.period == self.CUSTOM:
            if not self.period_days:
                errors["period_days"] = "A custom period needs its length in days."
            if self.period_anchor is None:
                self.period_anchor = timezone.localdate()
        else:
            self.period_days = None
            self.period_anchor = None
        if self.alert_emails:
            from django.core.validators import validate_email

            for address in _addresses(self.alert_emails):
                try:
                    validate_email(address)
                except ValidationError:
                    errors["alert_emails"] = f"“{address}” is not an e-mail address."
        if errors:
            raise ValidationError(errors)

    @property
    def alert_addresses(self) -> list[str]:
        return _addresses(self.alert_emails)

    # Set by save() and rotate_webhook_secret(): a signing secret just made, to be shown once; else "".
    issued_webhook_secret = ""

    @property
    def webhook_secret_legacy(self) -> bool:
        """A webhook still signed with the shared legacy secret (set before receivers had their own)."""
        return bool(self.alert_webhook_url) and not self.alert_webhook_secret

    def _new_webhook_receiver(self) -> bool:
        if self._state.adding:
            return True
        stored = Budget._base_manager.filter(pk=self.pk).values_list("alert_webhook_url", flat=True).first()
        return not stored or not same_origin(stored, self.alert_webhook_url)

    def rotate_webhook_secret(self) -> str:
        """Give the webhook's receiver a new signing secret, returned to be shown once; the old one stops now."""
        if not self.alert_webhook_url:
            raise ValueError("This budget has no webhook.")
        self.alert_webhook_secret = self.issued_webhook_secret = new_signing_secret()
        super().save(update_fields=["alert_webhook_secret", "updated_at"])
        return self.issued_webhook_secret


def _addresses(text: str) -> list[str]:
    return [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]


class BudgetAlert(models.Model):
    """A budget crossed a threshold in one period: made once per budget, period and threshold, then delivered."""

    PENDING, DELIVERED, FAILED, NONE = "pending", "delivered", "failed", "none"
    DELIVERY = [(PENDING, "Pending"), (DELIVERED, "Delivered"), (FAILED, "Failed"), (NONE, "Not configured")]

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_key = models.CharField(max_length=20)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    threshold_percent = models.PositiveSmallIntegerField()
    spent_usd = models.DecimalField(max_digits=20, decimal_places=9)
    limit_usd = models.DecimalField(max_digits=14, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    email_status = models.CharField(max_length=10, choices=DELIVERY, default=NONE)
    webhook_status = models.CharField(max_length=10, choices=DELIVERY, default=NONE)
    webhook_attempts = models.PositiveSmallIntegerField(default=0)
    webhook_error = models.CharField(max_length=500, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_key", "threshold_percent"], name="one_alert_per_budget_period_threshold"
            )
        ]

    def __str__(self):
        return f"{self.budget.describe_target()} reached {self.threshold_percent}% in {self.period_key}"


class UsageRecord(models.Model):
    """Tokens and cost of one metered request, written by the gateway's buffered writer."""

    request_id = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(db_index=True)
    # No database constraint: usage history outlives deleted keys and is bulk-written.
    client = models.ForeignKey(
        "keys.Client", on_delete=models.DO_NOTHING, db_constraint=False, null=True, related_name="+"
    )
    api_key = models.ForeignKey(
        "keys.ApiKey", on_delete=models.DO_NOTHING, db_constraint=False, null=True, related_name="+"
    )
    # The client's cost center when the request was made: attribution does not move with later changes.
    cost_center = models.ForeignKey(
        "keys.CostCenter", on_delete=models.DO_NOTHING, db_constraint=False, null=True, related_name="+"
    )
    agent = models.CharField(max_length=100)
    model = models.CharField(max_length=200)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=9, default=Decimal(0))
    # Priced with the "default" row because the model has no price of its own.
    default_priced = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["client", "created_at"]),
            models.Index(fields=["api_key", "created_at"]),
            models.Index(fields=["cost_center", "created_at"]),
        ]

    def __str__(self):
        return f"{self.request_id} {self.agent}/{self.model} ${self.cost_usd}"


class UsageRollup(models.Model):
    """One day's usage per cost center, client, key, agent and model: what reports read instead of raw rows."""

    day = models.DateField()
    cost_center = models.ForeignKey(
        "keys.CostCenter", on_delete=models.DO_NOTHING, db_constraint=False, null=True, related_name="+"
    )
    client = models.ForeignKey(
        "keys.Client", on_delete=models.DO_NOTHING, db_constraint=False, null=True, related_name="+"
    )
    api_key = models.ForeignKey(
        "keys.ApiKey", on_delete=models.DO_NOTHING, db_constraint=False, null=True, related_name="+"
    )
    agent = models.CharField(max_length=100)
    model = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=9, default=Decimal(0))
    default_priced_requests = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["day"]
        indexes = [
            models.Index(fields=["day"]),
            models.Index(fields=["client", "day"]),
            models.Index(fields=["cost_center", "day"]),
        ]

    def __str__(self):
        return f"{self.day} {self.client_id} {self.agent}/{self.model}: ${self.cost_usd}"


class RollupDay(models.Model):
    """When a day's rollups were last rebuilt; its row is also the lock that keeps two rollups of a day apart."""

    day = models.DateField(unique=True)
    rolled_up_at = models.DateTimeField()
    rows = models.PositiveIntegerField(default=0)

    def __str__(self):
        return f"{self.day} rolled up at {self.rolled_up_at}"
