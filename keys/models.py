import hashlib
import re
import secrets
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from keys.origins import validate_origin_list

KEY_PREFIX = "agk_"
VISIBLE_PREFIX_LENGTH = 12
ALL = "*"


def hash_key(raw_key: str) -> str:
    """Return the SHA-256 hex digest under which a raw key is stored."""
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def validate_scope_list(value):
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValidationError('Give a list of names, or ["*"] for all.')
    if ALL in value and len(value) > 1:
        raise ValidationError('"*" already means all; give it alone.')


def all_scope():
    return [ALL]


MAX_TAGS = 20
MAX_TAG_LENGTH = 50


def validate_tag_list(value):
    """Up to 20 tags of up to 50 characters, each once (what policy conditions read as ``client.tags``)."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValidationError("Give a list of tags (non-empty strings).")
    if len(value) > MAX_TAGS:
        raise ValidationError(f"At most {MAX_TAGS} tags.")
    if not all(item.isprintable() for item in value):
        raise ValidationError("A tag has no control characters.")
    if any(len(item) > MAX_TAG_LENGTH or item != item.strip() for item in value):
        raise ValidationError(f"Each tag is at most {MAX_TAG_LENGTH} characters, without surrounding spaces.")
    if len(set(value)) != len(value):
        raise ValidationError("Name each tag once.")


def validate_role_list(value):
    """A list of the slugs of roles that exist (``AgentRole``), each once."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValidationError("Give a list of role slugs.")
    if not all(item.isprintable() for item in value):
        raise ValidationError("A role slug has no control characters.")
    if len(set(value)) != len(value):
        raise ValidationError("Name each role once.")
    unknown = sorted(set(value) - set(AgentRole.objects.filter(slug__in=value).values_list("slug", flat=True)))
    if unknown:
        raise ValidationError(f"No such role: {', '.join(unknown)}. Create it first.")


class AgentRole(models.Model):
    """A role an agent may require of its callers (``Agent.required_role``): a key carries the roles it is given
    (``ApiKey.roles``); a key without the agent's role is refused (403 ``role_required``)."""

    slug = models.SlugField(max_length=100, unique=True, help_text="What keys and agents name it by.")
    name = models.CharField(max_length=200)
    description = models.CharField(max_length=500, blank=True, help_text="Who should hold it, and why.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        verbose_name = "agent role"

    def __str__(self):
        return self.slug


class CostCenter(models.Model):
    """A team or department: clients belong to one, and their spend is attributed and budgeted to it."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    code = models.CharField(max_length=50, blank=True, help_text="The accounting code finance knows it by.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Plan(models.Model):
    """Default limits and budget (free, pro, enterprise …) copied into new keys; a key may override them."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    requests_per_minute = models.PositiveIntegerField(default=60, validators=[MinValueValidator(1)])
    requests_per_day = models.PositiveIntegerField(default=0, help_text="0 means no daily limit.")
    tokens_per_minute = models.PositiveIntegerField(default=100_000, validators=[MinValueValidator(1)])
    max_concurrent = models.PositiveIntegerField(default=10, help_text="0 means no limit.")
    monthly_budget_usd = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="A hard monthly budget given to each new key on this plan; empty for none.",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def key_defaults(self) -> dict:
        """The limits a new key on this plan starts with."""
        return {
            "requests_per_minute": self.requests_per_minute,
            "requests_per_day": self.requests_per_day,
            "tokens_per_minute": self.tokens_per_minute,
            "max_concurrent": self.max_concurrent,
        }


class Client(models.Model):
    """A program or team that calls the gateway; owns keys, budgets and spend."""

    # What the audit log keeps of this client: changed by admins only (roles.AUDIT_POLICY), like the redaction rules.
    AUDIT_POLICY_FIELDS = ("audit_previews", "audit_retention_days")

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    contact = models.CharField(max_length=200, blank=True, help_text="Who to call about this client.")
    tags = models.JSONField(
        default=list, blank=True, validators=[validate_tag_list],
        help_text="Labels policy rules can test (client.tags), e.g. finance, external.",
    )  # fmt: skip
    allowed_origins = models.JSONField(
        default=list, blank=True, validators=[validate_origin_list],
        help_text="Web origins whose browser code may call the gateway with this client's keys (CORS), e.g. "
        "https://app.example.com, or * for any; empty: no browser access is granted.",
    )  # fmt: skip
    cost_center = models.ForeignKey(
        CostCenter, null=True, blank=True, on_delete=models.SET_NULL, related_name="clients",
        help_text="The team its spend is attributed to.",
    )  # fmt: skip
    is_active = models.BooleanField(default=True)
    audit_previews = models.BooleanField(
        default=True, help_text="Keep redacted previews of this client's requests and answers in the audit log."
    )
    audit_retention_days = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Keep this client's request records this many days; empty uses the gateway's default.",
    )  # fmt: skip
    # Shared by all the client's keys, on top of each key's own: more keys do not make more capacity.
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Requests per minute shared by all its keys, on top of each key's own limit; empty: none.",
    )  # fmt: skip
    tokens_per_minute = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Tokens per minute shared by all its keys, on top of each key's own limit; empty: none.",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class ApiKey(models.Model):
    """A gateway key: stored as a hash, shown raw once, scoped to agents and models."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=VISIBLE_PREFIX_LENGTH, db_index=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # ["*"] allows everything; an empty list allows nothing.
    allowed_agents = models.JSONField(default=list, blank=True, validators=[validate_scope_list])
    allowed_models = models.JSONField(default=all_scope, blank=True, validators=[validate_scope_list])
    tags = models.JSONField(
        default=list, blank=True, validators=[validate_tag_list],
        help_text="Labels policy rules can test (key.tags), e.g. ci, batch.",
    )  # fmt: skip
    roles = models.JSONField(
        default=list, blank=True, validators=[validate_role_list],
        help_text="Slugs of the roles the key carries: an agent that requires a role serves only keys holding it.",
    )  # fmt: skip
    plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.SET_NULL, related_name="api_keys",
        help_text="Where the key's limits came from when it was issued.",
    )  # fmt: skip
    requests_per_minute = models.PositiveIntegerField(default=60, validators=[MinValueValidator(1)])
    requests_per_day = models.PositiveIntegerField(default=0, help_text="0 means no daily limit.")
    tokens_per_minute = models.PositiveIntegerField(default=100_000, validators=[MinValueValidator(1)])
    max_concurrent = models.PositiveIntegerField(default=10, help_text="0 means no limit.")
    is_active = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaces", editable=False,
        help_text="The key issued when this one was rotated.",
    )  # fmt: skip
    identity_provider = models.ForeignKey(
        "IdentityProvider", null=True, blank=True, on_delete=models.SET_NULL, related_name="identity_keys",
        editable=False, help_text="Set on an identity key: the key the provider's tokens for this client are served "
        "with (it has no usable secret).",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        constraints = [
            models.UniqueConstraint(fields=["identity_provider", "client"], name="one_identity_key_per_client",
                                    condition=models.Q(identity_provider__isnull=False)),
        ]  # fmt: skip

    def __str__(self):
        return f"{self.prefix}… ({self.client})"

    @classmethod
    def new_secret(cls) -> str:
        return KEY_PREFIX + secrets.token_urlsafe(32)

    def set_secret(self, raw_key: str) -> None:
        self.key_hash = hash_key(raw_key)
        self.prefix = raw_key[:VISIBLE_PREFIX_LENGTH]

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def status(self) -> str:
        """The state the gateway sees: why it would refuse this key, or "active"."""
        if self.is_revoked:
            return "revoked"
        if self.is_expired:
            return "expired"
        if not self.is_active:
            return "disabled"
        if not self.client.is_active:
            return "client_disabled"
        return "active"


def validate_condition(value):
    from keys.policy import ConditionError, check_condition

    try:
        check_condition(value)
    except ConditionError as error:
        raise ValidationError(str(error)) from None


def validate_algorithms(value):
    from keys.identities import ALGORITHMS

    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ValidationError(f"Give a list of one or more of {', '.join(ALGORITHMS)}.")
    unknown = sorted(set(value) - set(ALGORITHMS))
    if unknown:
        raise ValidationError(f"Unknown algorithm {', '.join(unknown)}: use {', '.join(ALGORITHMS)}.")


def validate_audiences(value):
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValidationError("Give one or more audiences (the aud values tokens for this gateway carry).")
    if len(value) > 20 or any(len(item) > 300 for item in value):
        raise ValidationError("At most 20 audiences of up to 300 characters.")


def validate_jwks_url(value):
    from gateway_project.outbound import validate_jwks_url as check

    check(value)


def default_algorithms():
    return ["RS256", "ES256", "EdDSA"]


def validate_claim_name(value):
    if value and (len(value) > 100 or not value.isprintable() or value != value.strip()):
        raise ValidationError("A claim name is printable text without surrounding spaces, up to 100 characters.")


SLUG = re.compile(r"[-a-zA-Z0-9_]{1,100}")


def validate_slug_list(value):
    if not isinstance(value, list) or len(value) > 200:
        raise ValidationError("Give a list of up to 200 slugs.")
    for item in value:
        if not isinstance(item, str) or not SLUG.fullmatch(item):
            raise ValidationError(f"{str(item)[:60]!r} is not a slug (letters, digits, - and _).")


class IdentityProvider(models.Model):
    """An issuer of JWTs the gateway accepts in place of an API key (``keys.identities``).

    A token is verified with the issuer's published keys (its JWKS), for one of the audiences,
    and served as its client's *identity key* for this provider: made on first use with the
    scopes and limits below, so the client's budgets and the provider's limits apply to it.
    """

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True, help_text="Named in audit records (details.identity).")
    issuer = models.CharField(max_length=300, unique=True, help_text="The tokens' iss claim, exactly.")
    audiences = models.JSONField(validators=[validate_audiences], help_text='aud values accepted, e.g. ["gateway"].')
    jwks_url = models.URLField(
        max_length=500, validators=[validate_jwks_url],
        help_text="Where the issuer publishes its signing keys: HTTPS, or HTTP on loopback; the outbound address "
        "policy applies.",
    )  # fmt: skip
    algorithms = models.JSONField(default=default_algorithms, validators=[validate_algorithms])
    client = models.ForeignKey(
        Client, null=True, blank=True, on_delete=models.CASCADE, related_name="identity_providers",
        help_text="Every token's client. Empty: the client claim names it (by slug).",
    )  # fmt: skip
    client_claim = models.CharField(max_length=100, default="client_id", blank=True, validators=[validate_claim_name])
    claimable_clients = models.JSONField(
        default=list, blank=True, validators=[validate_slug_list],
        help_text="With a client claim: the client slugs its tokens may name. Empty: any client that no other "
        "provider is fixed to.",
    )  # fmt: skip
    roles_claim = models.CharField(
        max_length=100, default="roles", blank=True, validators=[validate_claim_name],
        help_text="The claim whose values are the caller's agent roles (a list, or space-separated text).",
    )  # fmt: skip
    groups_claim = models.CharField(
        max_length=100, default="groups", blank=True, validators=[validate_claim_name],
        help_text="The claim whose values policy rules read as identity.groups.",
    )  # fmt: skip
    leeway_seconds = models.PositiveIntegerField(
        default=30, validators=[MaxValueValidator(300)], help_text="Clock skew allowed on exp, nbf and iat."
    )
    allowed_agents = models.JSONField(default=all_scope, blank=True, validators=[validate_scope_list])
    allowed_models = models.JSONField(default=all_scope, blank=True, validators=[validate_scope_list])
    requests_per_minute = models.PositiveIntegerField(default=60, validators=[MinValueValidator(1)])
    tokens_per_minute = models.PositiveIntegerField(default=100_000, validators=[MinValueValidator(1)])
    max_concurrent = models.PositiveIntegerField(default=10, help_text="0 means no limit.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        if self.client_id is None and not self.client_claim:
            raise ValidationError({"client_claim": "Name the claim that names the client, or choose the client."})

    def may_name(self, client: Client) -> bool:
        """Whether this provider's tokens may name ``client`` by their claim: one of its claimable clients, or, when
        it lists none, any client no other provider is fixed to (a client bound to its own provider is that
        provider's alone)."""
        if self.claimable_clients:
            return client.slug in self.claimable_clients
        return not IdentityProvider.objects.filter(client=client).exclude(pk=self.pk).exists()

    def key_fields(self) -> dict:
        """What its identity keys hold of it (kept in step when it changes)."""
        return {
            "name": f"Identity: {self.name}"[:200], "allowed_agents": self.allowed_agents,
            "allowed_models": self.allowed_models, "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute, "max_concurrent": self.max_concurrent,
        }  # fmt: skip


def validate_detectors(value):
    from keys.guardrails import DETECTORS

    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError(f"Give a list of detectors: {', '.join(DETECTORS)}.")
    unknown = sorted(set(value) - set(DETECTORS))
    if unknown:
        raise ValidationError(f"Unknown detector {', '.join(unknown)}: use {', '.join(DETECTORS)}.")


def validate_national_ids(value):
    from keys.guardrails import NATIONAL_ID_CHOICES

    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError(f"Give a list of national IDs: {', '.join(NATIONAL_ID_CHOICES)}.")
    unknown = sorted(set(value) - set(NATIONAL_ID_CHOICES))
    if unknown:
        raise ValidationError(f"Unknown national ID {', '.join(unknown)}: use {', '.join(NATIONAL_ID_CHOICES)}.")


def validate_hook_url(value):
    if value:
        from gateway_project.outbound import validate_hook_url as check

        check(value)


def all_national_ids():
    from keys.guardrails import NATIONAL_ID_CHOICES

    return list(NATIONAL_ID_CHOICES)


class Guardrail(models.Model):
    """Detectors run on what a client sends (input) and on what comes back (output), and what to do on a finding.

    Applies to the requests of its clients and cost centers (none named: every client) to its
    agents (none named: every agent), in ``position`` order (``routing.guarding``). ``block``
    refuses (400 on input, 403 on output, naming the detector, never the text), ``redact``
    puts a placeholder in the text the upstream or the client sees, ``flag`` only records.
    An external hook, when set, is asked too, and fails open or closed.
    """

    INPUT, OUTPUT, BOTH = "input", "output", "both"
    STAGES = [(INPUT, "Input"), (OUTPUT, "Output"), (BOTH, "Input and output")]
    BLOCK, REDACT, FLAG = "block", "redact", "flag"
    ACTIONS = [(BLOCK, "Block"), (REDACT, "Redact"), (FLAG, "Flag (record only)")]

    name = models.CharField(max_length=100, unique=True, help_text="Named in refusals and audit records.")
    description = models.CharField(max_length=500, blank=True)
    position = models.PositiveIntegerField(default=100)
    stage = models.CharField(max_length=6, choices=STAGES, default=INPUT)
    detectors = models.JSONField(
        default=list, blank=True, validators=[validate_detectors],
        help_text="email, phone, card, iban, national_id, secret, injection.",
    )  # fmt: skip
    national_ids = models.JSONField(default=all_national_ids, blank=True, validators=[validate_national_ids])
    injection_threshold = models.PositiveSmallIntegerField(
        default=50, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="The prompt-injection score (0-100) from which the injection detector finds.",
    )  # fmt: skip
    action = models.CharField(max_length=6, choices=ACTIONS, default=BLOCK)
    clients = models.JSONField(
        default=list, blank=True, validators=[validate_slug_list],
        help_text="Client slugs it applies to; none (and no cost center): every client.",
    )  # fmt: skip
    cost_centers = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_slug_list],
        help_text="Cost center slugs whose clients it applies to.",
    )
    agents = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_slug_list],
        help_text="Agent slugs it applies to; none: every agent.",
    )
    hook_url = models.URLField(
        max_length=500, blank=True, validators=[validate_hook_url],
        help_text="An external check POSTed the text (HTTPS, or HTTP to loopback; the outbound policy applies).",
    )  # fmt: skip
    hook_timeout_ms = models.PositiveIntegerField(
        default=2000, validators=[MinValueValidator(50), MaxValueValidator(10_000)]
    )
    hook_fail_open = models.BooleanField(
        default=False, help_text="When the hook fails or is too slow: let the text through (else: block)."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "pk"]

    def __str__(self):
        return self.name

    def clean(self):
        if not self.detectors and not self.hook_url:
            raise ValidationError({"detectors": "Choose a detector, or give a hook."})
        if self.hook_url and self.stage != self.INPUT:
            raise ValidationError({"hook_url": "A hook checks requests (stage input): answers are checked by the "
                                               "detectors only."})  # fmt: skip
        if self.action == self.REDACT and self.detectors == ["injection"] and not self.hook_url:
            raise ValidationError({"action": "An injection score has nothing to redact: block or flag."})


class PolicyRule(models.Model):
    """One rule of the gateway's policy: a CEL condition on the request and what to do when it holds.

    Active rules run in ``position`` order on every request (``keys.policy``): the first
    enforced deny that matches refuses it (403 ``policy_denied``); an allow marked ``final``
    stops the evaluation, so later denies do not apply; a rule in dry run is only audited.
    """

    DENY, ALLOW = "deny", "allow"
    EFFECTS = [(DENY, "Deny"), (ALLOW, "Allow")]

    name = models.CharField(max_length=100, help_text="Named in refusals and audit records.")
    description = models.CharField(max_length=500, blank=True)
    position = models.PositiveIntegerField(default=100, help_text="Rules run in ascending position.")
    effect = models.CharField(max_length=5, choices=EFFECTS, default=DENY)
    condition = models.TextField(
        max_length=2000, validators=[validate_condition],
        help_text="A CEL expression over request, client, key, identity and now, true when the rule applies, "
        "e.g. !ip_in(request.ip, ['10.0.0.0/8']).",
    )  # fmt: skip
    final = models.BooleanField(
        default=False, help_text="Allow rules only: when it matches, no later rule applies (later denies included)."
    )
    dry_run = models.BooleanField(
        default=False, help_text="Only record what the rule would do (details.policy.would_deny); enforce nothing."
    )
    message = models.CharField(max_length=300, blank=True, help_text="Added to the refusal a deny rule answers.")
    is_active = models.BooleanField(default=True)
    draft = models.BooleanField(
        default=False, help_text="Not in force: a draft is tried on past traffic (what-if) and published when ready."
    )
    draft_of = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="pending_draft",
        help_text="The rule this draft changes when published (empty: a new rule).",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "pk"]
        constraints = [
            # A draft of a rule may keep its name; every other rule's name is its own (live and new drafts alike).
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(draft_of__isnull=True), name="policy_rule_unique_name",
                violation_error_message="A rule with this name already exists.",
            ),
            models.CheckConstraint(
                condition=models.Q(draft_of__isnull=True) | models.Q(draft=True), name="policy_rule_draft_of_draft",
                violation_error_message="Only a draft can change another rule.",
            ),
        ]  # fmt: skip

    def __str__(self):
        return self.name

    def clean(self):
        if self.final and self.effect != self.ALLOW:
            raise ValidationError({"final": "Only an allow rule can be final."})
        if self.draft_of_id is not None:
            if self.draft_of.draft:
                raise ValidationError({"draft_of": "A draft changes a rule in force, not another draft."})
            clash = PolicyRule.objects.filter(name=self.name, draft_of__isnull=True).exclude(pk=self.draft_of_id)
            if clash.exists():
                raise ValidationError({"name": "A rule with this name already exists."})
        renamed_to = PolicyRule.objects.filter(name=self.name, draft_of__isnull=False).exclude(pk=self.pk)
        if self.draft_of_id is None and renamed_to.exclude(draft_of=self.pk).exists():
            raise ValidationError({"name": "A draft of another rule takes this name when published."})


class PolicyWhatIf(models.Model):
    """A replay of the draft rule set against the request log of a window (``keys.whatif``), run by Celery.

    The rules are copied when it is asked for, so its results keep saying what they were
    measured for after the drafts change or are published.
    """

    QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
    STATUS_CHOICES = [(QUEUED, "Queued"), (RUNNING, "Running"), (DONE, "Done"), (FAILED, "Failed")]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="policy_what_ifs"
    )
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    live_rules = models.JSONField(default=list, help_text="The rules in force when it was asked for.")
    draft_rules = models.JSONField(default=list, help_text="The rules as they would be with the drafts published.")
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=QUEUED, db_index=True)
    records_total = models.PositiveBigIntegerField(default=0)
    records_scanned = models.PositiveBigIntegerField(default=0)
    results = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"what-if {self.window_start:%Y-%m-%d %H:%M} to {self.window_end:%Y-%m-%d %H:%M}"


TOKEN_PREFIX = "agt_"


class ApiToken(models.Model):
    """A console user's management API token: stored as a hash, shown raw once, ending at ``expires_at``.

    Rotating one (``keys.api_tokens``) revokes it and points it at its successor, so a
    caller still holding it is told what happened instead of "invalid token".
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    prefix = models.CharField(max_length=VISIBLE_PREFIX_LENGTH, db_index=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: the token never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaces", editable=False,
        help_text="The token issued when this one was rotated.",
    )  # fmt: skip

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def new_secret(cls) -> str:
        return TOKEN_PREFIX + secrets.token_urlsafe(32)

    def set_secret(self, raw_token: str) -> None:
        self.key_hash = hash_key(raw_token)
        self.prefix = raw_token[:VISIBLE_PREFIX_LENGTH]

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def lifetime(self):
        """How long the token was issued for (None: for ever); a rotation gives its successor as long."""
        return None if self.expires_at is None else self.expires_at - self.created_at
