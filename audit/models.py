from decimal import Decimal

from django.db import models

PREVIEW_LENGTH = 200


class AuditRecord(models.Model):
    """One request through the gateway, refused or answered.

    Client, key and agent are copied as plain values, not foreign keys, so the
    record stays true after the objects it names change or disappear.
    """

    request_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(db_index=True)
    client_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    client_slug = models.CharField(max_length=100, blank=True, db_index=True)
    api_key_id = models.BigIntegerField(null=True, blank=True)
    key_prefix = models.CharField(max_length=20, blank=True, db_index=True)
    agent = models.CharField(max_length=100, blank=True, db_index=True)
    model = models.CharField(max_length=200, blank=True)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    status = models.PositiveSmallIntegerField(db_index=True)
    error_type = models.CharField(max_length=60, blank=True)
    latency_ms = models.FloatField(default=0)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=9, default=Decimal(0))
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    input_preview = models.CharField(max_length=PREVIEW_LENGTH, blank=True)
    output_preview = models.CharField(max_length=PREVIEW_LENGTH, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.request_id} {self.method} {self.path} {self.status}"
