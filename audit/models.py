import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

from audit.redaction import CODE_CHECK_CHOICES, MAX_PATTERN_LENGTH, validate_pattern, validate_replacement

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
    target = models.CharField(max_length=300, blank=True, help_text="The upstream that answered.")
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
    details = models.JSONField(
        default=dict, blank=True,
        help_text="Facts of the exchange beyond the columns: retries, fallbacks, failed targets, WebSocket traffic.",
    )  # fmt: skip
    # The hash chain (``audit.chain``): the record's place, the hash of the one before it, and its own hash.
    seq = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    record_hash = models.CharField(max_length=64, blank=True, editable=False)
    # The id of the chain key the hash was made with (HMAC); empty for records hashed before the chain was keyed.
    chain_key_id = models.CharField(max_length=16, blank=True, default="", editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.request_id} {self.method} {self.path} {self.status}"


class AdminAction(models.Model):
    """One change made through the console or the management API: who, when, what, from -> to.

    Append-only like the request log. Secrets never enter it: raw keys are never
    known after issue, and secret fields are recorded as changed, not by value.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150, db_index=True, help_text="Username of who made the change.")
    actor_id = models.BigIntegerField(null=True, blank=True)
    via = models.CharField(max_length=20, help_text="console or api")
    action = models.CharField(max_length=30, db_index=True)  # create, update, delete, revoke, rotate
    object_type = models.CharField(max_length=60, db_index=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True, help_text='{"field": [from, to]}')
    # The trail's own hash chain, kept like the request log's (``audit.chain``).
    seq = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    record_hash = models.CharField(max_length=64, blank=True, editable=False)
    chain_key_id = models.CharField(max_length=16, blank=True, default="", editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.actor} {self.action} {self.object_type} {self.object_repr}"


class RedactionRule(models.Model):
    """One rule that replaces what its regex matches in audit previews with a label.

    Built-in rules come from a migration: they may be switched on or off but not
    edited or deleted. A built-in rule may name a code check (``audit.redaction``)
    that a match must also pass, such as the Luhn check for card numbers.
    """

    name = models.CharField(max_length=100, unique=True)
    pattern = models.CharField(
        max_length=MAX_PATTERN_LENGTH,
        validators=[validate_pattern],
        help_text=r"An RE2 regular expression: Python's syntax without backreferences or lookarounds.",
    )
    replacement = models.CharField(
        max_length=40, default="[REDACTED]", validators=[validate_replacement],
        help_text="What the matched text becomes in the preview, e.g. [ACCOUNT].",
    )  # fmt: skip
    code_check = models.CharField(max_length=20, blank=True, choices=CODE_CHECK_CHOICES, editable=False)
    enabled = models.BooleanField(default=True)
    builtin = models.BooleanField(default=False, editable=False)
    order = models.PositiveIntegerField(default=100, help_text="Rules apply in this order, lowest first.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self):
        return self.name


class AuditExport(models.Model):
    """An export too large to stream in one response: written to a compressed file by a Celery task.

    Only its requester may download the file, until ``expires_at``; the id is a
    random UUID so a link cannot be guessed either.
    """

    RECORDS, TRAIL = "records", "trail"
    KIND_CHOICES = [(RECORDS, "Request log"), (TRAIL, "Admin-action trail")]
    FORMAT_CHOICES = [("csv", "CSV"), ("jsonl", "JSON Lines")]
    QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
    STATUS_CHOICES = [(QUEUED, "Queued"), (RUNNING, "Running"), (DONE, "Done"), (FAILED, "Failed")]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="audit_exports"
    )
    kind = models.CharField(max_length=10, choices=KIND_CHOICES, default=RECORDS)
    format = models.CharField(max_length=10, choices=FORMAT_CHOICES, default="csv")
    filters = models.JSONField(default=dict, blank=True, help_text='The filter as given, e.g. {"client": "acme"}.')
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=QUEUED, db_index=True)
    rows_total = models.PositiveBigIntegerField(default=0, help_text="Rows matching the filter when the task began.")
    rows_written = models.PositiveBigIntegerField(default=0)
    file_name = models.CharField(max_length=200, blank=True)
    file_size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.get_kind_display()} export {self.id} ({self.format}, {self.status})"


class AuditArchive(models.Model):
    """Request records removed by the retention job, kept as one compressed JSON Lines file.

    The file holds every chained field, so it verifies offline; its runs
    (``ArchivedRun``) let the chain still be checked in the database across the cut.
    """

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    file_name = models.CharField(max_length=200, unique=True)
    file_size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    records = models.PositiveBigIntegerField(default=0)
    first_seq = models.BigIntegerField(null=True, blank=True)
    last_seq = models.BigIntegerField(null=True, blank=True)
    oldest_at = models.DateTimeField(null=True, blank=True)
    newest_at = models.DateTimeField(null=True, blank=True)
    policy = models.JSONField(default=dict, blank=True, help_text="The retention that applied: default and overrides.")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.file_name


class ArchivedRun(models.Model):
    """A run of consecutive seq numbers that went into an archive, with the hashes at its two ends.

    A record after the run must name ``last_hash`` as its previous hash, and
    ``prev_hash`` must be the hash of the record before the run: the chain holds
    across the cut without the archived records in the database.
    """

    archive = models.ForeignKey(AuditArchive, on_delete=models.PROTECT, related_name="runs")
    first_seq = models.BigIntegerField(unique=True)
    last_seq = models.BigIntegerField()
    prev_hash = models.CharField(max_length=64)
    last_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["first_seq"]

    def __str__(self):
        return f"seq {self.first_seq}-{self.last_seq} in {self.archive}"


class QuarantinedRow(models.Model):
    """A row the database refused to store, set aside by the writer so that the rows around it were written.

    The row is kept as it was queued, except that strings the database cannot take are
    escaped (``{"$escaped": "..."}``); ``reason`` is the database's own message. A spool
    line that could not be read at all is kept with an empty ``model``.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    model = models.CharField(max_length=100, blank=True, help_text="The row's model, e.g. audit.AuditRecord.")
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    row = models.JSONField(default=dict, blank=True)
    reason = models.TextField(help_text="Why the database refused it.")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.model or 'spool line'} {self.request_id}".strip()
