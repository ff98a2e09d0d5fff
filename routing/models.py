import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator, MaxValueValidator, MinValueValidator
from django.db import models

from gateway_project.credentials import EncryptedTextField, HostBoundCredential
from gateway_project.outbound import validate_upstream_url

DEFAULT_RETRY_STATUSES = [502, 503, 529]


def validate_agent_timeout(seconds: float) -> None:
    """An agent's timeout is at most ``GATEWAY_MAX_ANSWER_SECONDS``: a request's slots are counted no longer."""
    longest = settings.GATEWAY["MAX_ANSWER_SECONDS"]
    if seconds > longest:
        raise ValidationError(
            f"At most {longest:g} seconds, the longest a request may take (GATEWAY_MAX_ANSWER_SECONDS): raise that "
            "first."
        )


CREDENTIAL_MAX_LENGTH = 500
# An agent's balancing, retry, breaker and versioning settings: the console form and the API edit the same ones.
RESILIENCE_FIELDS = [
    "strategy",
    "max_retries",
    "retry_statuses",
    "fallbacks",
    "breaker_failures",
    "breaker_window_seconds",
    "breaker_cooldown_seconds",
    "deprecated",
    "sunset_at",
]

# Its exact response cache (routing/response_cache.py): the console form and the API edit the same ones.
CACHE_FIELDS = [
    "cache_enabled",
    "cache_ttl_seconds",
    "cache_shared",
    "cache_streams",
    "cache_max_entry_bytes",
    "cache_any_temperature",
]
CACHE_MAX_TTL_SECONDS = 30 * 86400
CACHE_MAX_ENTRY_BYTES = 8 * 1024 * 1024


def default_retry_statuses():
    return list(DEFAULT_RETRY_STATUSES)


def validate_status_list(value):
    if not isinstance(value, list) or not all(isinstance(item, int) and 400 <= item <= 599 for item in value):
        raise ValidationError("Give a list of HTTP statuses from 400 to 599.")


def validate_name_list(value):
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValidationError("Give a list of non-empty strings.")


class Agent(HostBoundCredential):
    """An upstream the gateway forwards to: an agent service or an LLM provider.

    ``kind`` decides the wire shape: ``agent`` services take ``POST /invoke``,
    ``openai`` and ``anthropic`` providers take their own chat APIs. ``served_models``
    lists the model names this upstream serves; a chat request's ``model``
    selects the agent that serves it (or the agent whose slug it names). Its
    credential is encrypted at rest and bound to its URL's origin
    (``gateway_project.credentials``).
    """

    URL_FIELD = "upstream_url"

    class Kind(models.TextChoices):
        AGENT = "agent", "Agent service"
        OPENAI = "openai", "OpenAI-compatible provider"
        ANTHROPIC = "anthropic", "Anthropic provider"

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.AGENT)
    upstream_url = models.URLField(
        max_length=500, validators=[validate_upstream_url], help_text="Base URL, e.g. http://10.0.0.5:9000"
    )
    upstream_api_key = EncryptedTextField(
        blank=True,
        validators=[MaxLengthValidator(CREDENTIAL_MAX_LENGTH)],
        help_text="Credential the gateway sends upstream (never the client's key); encrypted at rest.",
    )
    served_models = models.JSONField(default=list, blank=True, validators=[validate_name_list])
    default_model = models.CharField(
        max_length=200, blank=True, help_text="Model used (and priced) when the request names none."
    )
    capabilities = models.JSONField(
        default=list, blank=True, validators=[validate_name_list], help_text="Keywords for content routing."
    )
    timeout_seconds = models.FloatField(default=60.0)
    default_max_output_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Answer length assumed for a request without max_tokens when its worst-case "
        "cost is reserved against budgets; empty: GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS.",
    )  # fmt: skip
    max_concurrent = models.PositiveIntegerField(
        default=0, help_text="Requests this agent serves at once, shared by all clients; 0 means no limit."
    )
    requests_per_minute = models.PositiveIntegerField(
        default=0, help_text="Requests per minute this agent accepts, shared by all clients; 0 means no limit."
    )

    # How a request picks one of the agent's targets (when it has more than one enabled).
    class Strategy(models.TextChoices):
        WEIGHTED = "weighted", "Weighted (canary)"
        LEAST_BUSY = "least_busy", "Least busy"
        LATENCY = "latency", "Latency-aware"

    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.WEIGHTED)
    # Resilience: retries on the same agent, then the fallback chain, each target guarded by a circuit breaker.
    max_retries = models.PositiveSmallIntegerField(
        default=2, validators=[MaxValueValidator(10)], help_text="Retries after a failed attempt; 0 never retries."
    )
    retry_statuses = models.JSONField(
        default=default_retry_statuses, blank=True, validators=[validate_status_list],
        help_text="Upstream statuses that are retried (and fall back); connection errors and timeouts always are.",
    )  # fmt: skip
    fallbacks = models.JSONField(
        default=list, blank=True, validators=[validate_name_list],
        help_text="Agents tried in this order when this one fails (e.g. claude-sonnet → gpt-4o → local).",
    )  # fmt: skip
    breaker_failures = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1)], help_text="Consecutive failures that open a target's circuit."
    )
    breaker_window_seconds = models.FloatField(default=60.0, help_text="Within this many seconds.")
    breaker_cooldown_seconds = models.FloatField(
        default=30.0, help_text="How long an open circuit fails fast before one probe request is let through."
    )
    deprecated = models.BooleanField(default=False, help_text="Answers carry a Deprecation header.")
    sunset_at = models.DateTimeField(null=True, blank=True, help_text="Answers carry a Sunset header with this date.")
    cost_center = models.CharField(max_length=100, blank=True)
    dearer_models = models.JSONField(
        default=list, blank=True, validators=[validate_name_list],
        help_text="Models this upstream answered with that cost more than what was reserved: the gateway adds them, "
        "and reservations price them in from then on. Remove one once the upstream no longer substitutes it.",
    )  # fmt: skip
    required_role = models.ForeignKey(
        "keys.AgentRole", null=True, blank=True, on_delete=models.PROTECT, related_name="agents",
        help_text="Only keys holding this role may call the agent (others get 403 role_required); empty: any key "
        "its scopes allow.",
    )  # fmt: skip
    unmetered_pass_through = models.BooleanField(
        default=False,
        help_text="Provider agents only: let pass-through calls whose usage the gateway cannot read (paths other than "
        "the provider's metered APIs) through unpriced. Off: such calls are refused with 403 unmetered_pass_through.",
    )
    # The exact response cache: off unless the admin turns it on for this agent.
    cache_enabled = models.BooleanField(
        default=False,
        help_text="Answer a request the same as one answered before (same model, messages and parameters) from the "
        "cache, at no cost to the client, until the entry expires.",
    )
    cache_ttl_seconds = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(1), MaxValueValidator(CACHE_MAX_TTL_SECONDS)],
        help_text="How long an answer is served from the cache.",
    )  # fmt: skip
    cache_shared = models.BooleanField(
        default=False,
        help_text="Share cached answers between all clients of this agent. Off: each client has its own.",
    )
    cache_streams = models.BooleanField(
        default=False, help_text="Cache streamed answers too, replayed as the same event stream."
    )
    cache_max_entry_bytes = models.PositiveIntegerField(
        default=262_144, validators=[MinValueValidator(1), MaxValueValidator(CACHE_MAX_ENTRY_BYTES)],
        help_text="Larger answers are not cached.",
    )  # fmt: skip
    cache_any_temperature = models.BooleanField(
        default=False,
        help_text="Cache requests whatever their temperature. Off: one above GATEWAY_CACHE_MAX_TEMPERATURE is "
        "answered fresh.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug

    def clean(self):
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise ValidationError({"timeout_seconds": "Must be above zero."})
        if self.timeout_seconds is not None:
            try:
                validate_agent_timeout(self.timeout_seconds)
            except ValidationError as error:
                raise ValidationError({"timeout_seconds": error.messages}) from None
        for name in ("breaker_window_seconds", "breaker_cooldown_seconds"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValidationError({name: "Must be above zero."})
        if self.slug and self.slug in (self.fallbacks or []):
            raise ValidationError({"fallbacks": "An agent cannot fall back to itself."})


class Target(HostBoundCredential):
    """One upstream instance of an agent; an agent without enabled targets is served by its ``upstream_url``.

    It is sent its own credential, or else the agent's when it is on the agent's own origin.
    """

    URL_FIELD = "url"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="targets")
    name = models.SlugField(max_length=100, help_text="e.g. v1, v2-canary, eu-west")
    url = models.URLField(
        max_length=500, validators=[validate_upstream_url], help_text="Base URL, e.g. http://10.0.0.6:9000"
    )
    weight = models.PositiveIntegerField(
        default=100, validators=[MaxValueValidator(10_000)], help_text="Share of traffic under the weighted strategy."
    )
    max_concurrent = models.PositiveIntegerField(default=0, help_text="Requests at once; 0 means no limit.")
    upstream_api_key = EncryptedTextField(
        blank=True,
        validators=[MaxLengthValidator(CREDENTIAL_MAX_LENGTH)],
        help_text="Credential sent to this target; empty: the agent's, when the target is on the agent's own "
        "scheme, host and port, else none. Encrypted at rest.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent", "name"]
        constraints = [models.UniqueConstraint(fields=["agent", "name"], name="unique_target_name_per_agent")]

    def __str__(self):
        return f"{self.agent.slug}/{self.name}"


class PathRoute(models.Model):
    """A path prefix and methods served by an agent, with their own timeout, retries, auth, rate and protocol."""

    class Protocol(models.TextChoices):
        PLAIN = "plain", "Plain HTTP"
        SSE = "sse", "Server-sent events"

    prefix = models.CharField(max_length=200, unique=True, help_text="e.g. /api/v1/search")
    methods = models.JSONField(default=list, blank=True, help_text='e.g. ["POST"]; empty: every method.')
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="path_routes")
    upstream_path = models.CharField(
        max_length=200, blank=True, help_text="Path on the agent the prefix maps to; empty: the request's own path."
    )
    timeout_seconds = models.FloatField(null=True, blank=True, help_text="Total time; empty: the agent's.")
    max_retries = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(10)], help_text="Empty: the agent's."
    )
    auth_required = models.BooleanField(default=True, help_text="Off: callers need no API key (audited as anonymous).")
    requests_per_minute = models.PositiveIntegerField(default=0, help_text="For this route, all callers; 0: no limit.")
    protocol = models.CharField(max_length=10, choices=Protocol.choices, default=Protocol.PLAIN)
    deprecated = models.BooleanField(default=False)
    sunset_at = models.DateTimeField(null=True, blank=True)
    # Its own exact response cache (the agent's does not apply to calls through the route). Anonymous callers'
    # answers are cached only when shared: they have no client of their own.
    cache_enabled = Agent._meta.get_field("cache_enabled").clone()
    cache_ttl_seconds = Agent._meta.get_field("cache_ttl_seconds").clone()
    cache_shared = Agent._meta.get_field("cache_shared").clone()
    cache_streams = Agent._meta.get_field("cache_streams").clone()
    cache_max_entry_bytes = Agent._meta.get_field("cache_max_entry_bytes").clone()
    cache_any_temperature = Agent._meta.get_field("cache_any_temperature").clone()
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["prefix"]

    def __str__(self):
        return self.prefix


class CapabilityKeyword(models.Model):
    """Content routing's map: a word in the input names a capability; agents list the capabilities they have."""

    keyword = models.CharField(max_length=100, unique=True)
    capability = models.SlugField(max_length=100)

    class Meta:
        ordering = ["capability", "keyword"]

    def __str__(self):
        return f"{self.keyword} → {self.capability}"


class AgentJob(models.Model):
    """A long-running agent call made in the background (``"async": true``); its result waits here."""

    QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
    STATUS_CHOICES = [(QUEUED, "Queued"), (RUNNING, "Running"), (SUCCEEDED, "Succeeded"), (FAILED, "Failed")]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    request_id = models.CharField(max_length=64, db_index=True)
    api_key = models.ForeignKey("keys.ApiKey", on_delete=models.SET_NULL, null=True, related_name="jobs")
    client = models.ForeignKey("keys.Client", on_delete=models.SET_NULL, null=True, related_name="jobs")
    agent = models.CharField(max_length=100)
    request = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=QUEUED, db_index=True)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    webhook_url = models.URLField(max_length=500, blank=True)
    # The key its webhook is signed with, made for this job and shown once (in the 202); encrypted at rest.
    webhook_secret = EncryptedTextField(blank=True)
    webhook_status = models.CharField(max_length=20, blank=True, help_text="pending, delivered or failed")
    webhook_attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"job {self.id} ({self.status})"


AUTO_MODEL = "auto"


def validate_keywords(value):
    from routing.auto_signals import clean_keywords

    clean_keywords(value)


def validate_capabilities(value):
    from routing.auto_signals import clean_capabilities

    clean_capabilities(value)


class AutoRouteRule(models.Model):
    """One rule of model auto-routing (``routing.auto_route``).

    A request for the model ``auto`` (or for an agent whose default model is ``auto``) is
    answered by the model of the first enabled rule, in ``position`` order, whose conditions
    all hold and whose model the key may use and supports what the request asks for. The
    rule marked ``is_default`` has no conditions: its model answers when no other rule does.
    Rules with an ``agent`` apply only to requests for that agent, and pick among its models.
    """

    name = models.CharField(max_length=100, help_text="Shown in the X-Gateway-Route-Reason header and the audit.")
    position = models.PositiveIntegerField(default=100, help_text="Rules are tried in ascending position.")
    enabled = models.BooleanField(default=True)
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="auto_route_rules",
        help_text="Only for requests to this agent (its default model must be “auto”); empty: requests for the "
        "model “auto”.",
    )  # fmt: skip
    model = models.CharField(max_length=200, help_text="The model this rule picks.")
    is_default = models.BooleanField(
        default=False, help_text="The fallback: no conditions, used when no other rule matches (one per agent)."
    )
    min_prompt_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Estimated prompt tokens: at least."
    )
    max_prompt_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Estimated prompt tokens: at most."
    )
    min_complexity = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Complexity score (0 to 1), at least.",
    )  # fmt: skip
    max_complexity = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Complexity score (0 to 1), at most.",
    )  # fmt: skip
    keywords = models.JSONField(
        default=list, blank=True, validators=[validate_keywords],
        help_text="Any of these words or phrases in the last user message (whole words, any case); empty: any text.",
    )  # fmt: skip
    asks_for = models.JSONField(
        default=list, blank=True, validators=[validate_capabilities],
        help_text="The request asks for all of these (tools, vision, json); empty: any request.",
    )  # fmt: skip
    max_input_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="The model's input price (USD per million tokens), at most.",
    )  # fmt: skip
    max_output_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="The model's output price (USD per million tokens), at most.",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    CONDITIONS = (
        "min_prompt_tokens", "max_prompt_tokens", "min_complexity", "max_complexity", "keywords", "asks_for",
        "max_input_per_million", "max_output_per_million",
    )  # fmt: skip

    class Meta:
        ordering = ["position", "pk"]

    def __str__(self):
        return self.name

    def clean(self):
        from routing.auto_route import rule_problems

        problems = rule_problems(self)
        if problems:
            raise ValidationError(problems)
