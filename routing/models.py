from django.core.exceptions import ValidationError
from django.db import models


def validate_name_list(value):
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValidationError("Give a list of non-empty strings.")


class Agent(models.Model):
    """An upstream the gateway forwards to: an agent service or an LLM provider.

    ``kind`` decides the wire shape: ``agent`` services take ``POST /invoke``,
    ``openai`` and ``anthropic`` providers take their own chat APIs. ``served_models``
    lists the model names this upstream serves; a chat request's ``model``
    selects the agent that serves it (or the agent whose slug it names).
    """

    class Kind(models.TextChoices):
        AGENT = "agent", "Agent service"
        OPENAI = "openai", "OpenAI-compatible provider"
        ANTHROPIC = "anthropic", "Anthropic provider"

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.AGENT)
    upstream_url = models.URLField(max_length=500, help_text="Base URL, e.g. http://10.0.0.5:9000")
    upstream_api_key = models.CharField(
        max_length=500, blank=True, help_text="Credential the gateway sends upstream (never the client's key)."
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
    cost_center = models.CharField(max_length=100, blank=True)
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
