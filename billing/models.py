from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

DEFAULT_PRICE_MODEL = "default"
NANOS_PER_USD = 1_000_000_000


class ModelPrice(models.Model):
    """USD per million input and output tokens for one model; ``default`` prices the rest."""

    model = models.CharField(max_length=200, unique=True)
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6, validators=[MinValueValidator(0)])
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6, validators=[MinValueValidator(0)])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self):
        return f"{self.model}: ${self.input_per_million}/${self.output_per_million} per 1M"


class Budget(models.Model):
    """A client's monthly spending limit in USD; the gateway refuses with 402 once it is spent."""

    client = models.OneToOneField("keys.Client", on_delete=models.CASCADE, related_name="budget")
    monthly_limit_usd = models.DecimalField(max_digits=14, decimal_places=2, validators=[MinValueValidator(0)])
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.client}: ${self.monthly_limit_usd}/month"

    @property
    def limit_nanos(self) -> int:
        return int(self.monthly_limit_usd * NANOS_PER_USD)


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
    agent = models.CharField(max_length=100)
    model = models.CharField(max_length=200)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=9, default=Decimal(0))

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["client", "created_at"])]

    def __str__(self):
        return f"{self.request_id} {self.agent}/{self.model} ${self.cost_usd}"
