"""Console forms for clients, keys, cost centers and plans."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from keys.models import ALL, AgentRole, ApiKey, Client, CostCenter, Guardrail, IdentityProvider, Plan, PolicyRule
from keys.services import MAX_ROTATION_GRACE_HOURS

CENTS = Decimal("0.01")


class ClientForm(forms.ModelForm):
    class Meta:
        model = Client
        fields = [
            "name", "slug", "contact", "cost_center", "tags", "allowed_origins", "is_active", "requests_per_minute",
            "tokens_per_minute",
            "audit_previews", "audit_retention_days",
        ]  # fmt: skip
        labels = {
            "audit_previews": "Audit previews", "audit_retention_days": "Audit retention (days)",
            "requests_per_minute": "Client requests per minute", "tokens_per_minute": "Client tokens per minute",
        }  # fmt: skip
        help_texts = {
            "slug": "Short name used in logs and the API (letters, digits, - and _).",
            "cost_center": "The team its spend is attributed to from now on (past usage keeps its attribution).",
        }

    def __init__(self, *args, may_set_audit_policy: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tags"] = tags_field("client")
        self.fields["allowed_origins"] = TagListField(
            required=False, label="Allowed web origins",
            help_text="Comma-separated origins whose browser code may call the gateway with this client's keys "
            "(CORS), e.g. https://app.example.com, or * for any. Empty: browsers are not let in.",
        )  # fmt: skip
        self.fields["cost_center"].empty_label = "— none —"
        default = settings.GATEWAY_AUDIT_RETENTION_DAYS
        self.fields["audit_retention_days"].help_text = (
            "Keep this client's request records this many days, then archive and delete them; empty uses the "
            f"gateway's default ({f'{default} days' if default else 'for ever'})."
        )
        if not may_set_audit_policy:
            # Disabled fields keep the stored (or default) value whatever is posted.
            for name in Client.AUDIT_POLICY_FIELDS:
                self.fields[name].disabled = True
                self.fields[name].help_text += " Only admins change this."


class CostCenterForm(forms.ModelForm):
    class Meta:
        model = CostCenter
        fields = ["name", "slug", "code"]
        help_texts = {"slug": "Short name used in reports and the API (letters, digits, - and _)."}


class AgentRoleForm(forms.ModelForm):
    class Meta:
        model = AgentRole
        fields = ["slug", "name", "description"]
        help_texts = {"slug": "What agents and keys name it by (letters, digits, - and _); fixed once created."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:  # keys hold it by its slug: renaming it would take it from them
            self.fields["slug"].disabled = True


class PolicyRuleForm(forms.ModelForm):
    class Meta:
        model = PolicyRule
        fields = [
            "name", "description", "position", "effect", "condition", "final", "dry_run", "message", "is_active",
            "draft",
        ]  # fmt: skip
        widgets = {"condition": forms.Textarea(attrs={"rows": 4, "class": "mono", "spellcheck": "false"})}
        labels = {
            "final": "Final (allow rules: later rules do not apply)", "dry_run": "Dry run (record only)",
            "draft": "Save as a draft (not in force until published)",
        }  # fmt: skip

    def __init__(self, *args, draft_of: PolicyRule | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if draft_of is not None:  # a draft of a rule in force: a draft by definition
            self.instance.draft_of, self.instance.draft = draft_of, True
        if draft_of is not None or self.instance.pk:  # a rule stays in force; a draft is published, not unticked
            del self.fields["draft"]


class PolicyTestForm(forms.Form):
    context = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "class": "mono", "spellcheck": "false"}),
        help_text="A JSON object: request, client, key, identity (each with its fields) and now (ISO 8601); "
        "fields left out are empty.",
    )
    drafts = forms.BooleanField(required=False, label="With the drafts (the rules as they would be once published)")

    def clean_context(self):
        import json

        from keys.policy import context_from_json

        try:
            return context_from_json(json.loads(self.cleaned_data["context"]))
        except json.JSONDecodeError as error:
            raise forms.ValidationError(f"Not JSON: {error.msg} (line {error.lineno}, column {error.colno}).")
        except RecursionError:
            raise forms.ValidationError("Not a request context: nested too deeply.") from None
        except ValueError as error:
            raise forms.ValidationError(str(error))


class TagListField(forms.Field):
    """Tags typed comma-separated, kept as a list (``validate_tag_list`` checks them with the model)."""

    widget = forms.TextInput

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list | tuple) else value or ""

    def to_python(self, value):
        return _names(value or "")


def tags_field(what: str) -> TagListField:
    return TagListField(
        required=False, label="Tags", help_text=f"Comma-separated labels policy rules can test as {what}.tags."
    )


def role_field() -> forms.MultipleChoiceField:
    """The roles a key holds, as checkboxes of every role there is."""
    return forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Roles",
        choices=lambda: [(role.slug, f"{role.slug} ({role.name})") for role in AgentRole.objects.all()],
        help_text="An agent that requires a role serves only keys that hold it.",
    )  # fmt: skip


class KeyRolesForm(forms.ModelForm):
    """The roles and tags of an issued key (its scopes and limits are the API's to change)."""

    class Meta:
        model = ApiKey
        fields = ["roles", "tags"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["roles"] = role_field()
        self.fields["tags"] = tags_field("key")


class PlanForm(forms.ModelForm):
    class Meta:
        model = Plan
        fields = [
            "name", "slug", "requests_per_minute", "requests_per_day", "tokens_per_minute", "max_concurrent",
            "monthly_budget_usd",
        ]  # fmt: skip
        labels = {"monthly_budget_usd": "Monthly budget per key (USD)"}
        widgets = {"monthly_budget_usd": forms.NumberInput(attrs={"step": "0.01", "min": "0"})}

    def clean_monthly_budget_usd(self):
        value = self.cleaned_data["monthly_budget_usd"]
        return None if value is None else value.quantize(CENTS)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


# A new key's limits: blank ones come from the chosen plan, else from the key's defaults.
LIMITS = ("requests_per_minute", "requests_per_day", "tokens_per_minute", "max_concurrent")


class ApiKeyForm(forms.ModelForm):
    """A key's scopes, plan and limits; agents are checkboxes, models a comma-separated list or *.

    Limits left blank are filled by ``issue_key`` from the plan (or the key's defaults).
    """

    plan = forms.ModelChoiceField(
        queryset=Plan.objects.all(), required=False, empty_label="No plan",
        help_text="Limits left blank come from the plan; a plan with a monthly budget gives the key its own budget.",
    )  # fmt: skip
    requests_per_minute = forms.IntegerField(required=False, min_value=1, label="Requests per minute")
    requests_per_day = forms.IntegerField(required=False, min_value=0, label="Requests per day")
    tokens_per_minute = forms.IntegerField(required=False, min_value=1, label="Tokens per minute")
    max_concurrent = forms.IntegerField(required=False, min_value=0, label="Max concurrent requests")
    all_agents = forms.BooleanField(required=False, label="All agents, including ones added later")
    agents = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple, label="Agents")
    models_text = forms.CharField(
        initial=ALL, label="Models", help_text="Comma-separated model names, or * for every model of the agents."
    )

    class Meta:
        model = ApiKey
        fields = ["name", "expires_at"]
        widgets = {"expires_at": forms.DateTimeInput(attrs={"type": "datetime-local"})}
        help_texts = {"expires_at": "Leave empty for a key that does not expire."}

    def __init__(self, *args, agent_choices: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agents"].choices = [(slug, slug) for slug in agent_choices]
        self.fields["roles"] = role_field()
        self.fields["tags"] = tags_field("key")
        if self.instance.pk:
            agents = self.instance.allowed_agents or []
            self.initial.setdefault("all_agents", ALL in agents)
            self.initial.setdefault("agents", [a for a in agents if a != ALL])
            self.initial.setdefault("models_text", ", ".join(self.instance.allowed_models or []))

    def clean(self):
        data = super().clean()
        if not data.get("all_agents") and not data.get("agents"):
            self.add_error("agents", "Choose at least one agent, or allow all agents.")
        models = _names(data.get("models_text", ""))
        if not models:
            self.add_error("models_text", "Give at least one model name, or *.")
        elif ALL in models and len(models) > 1:
            self.add_error("models_text", "* already means every model; give it alone.")
        data["models"] = models
        return data

    def scope_fields(self) -> dict:
        data = self.cleaned_data
        return {
            "allowed_agents": [ALL] if data["all_agents"] else list(data["agents"]),
            "allowed_models": data["models"],
        }

    def key_fields(self) -> dict:
        """What ``issue_key`` gets: the plan, name, expiry, scopes and only the limits that were given."""
        data = self.cleaned_data
        limits = {name: data[name] for name in LIMITS if data.get(name) is not None}
        return {"plan": data["plan"], "name": data["name"], "expires_at": data["expires_at"], **limits,
                "roles": list(data.get("roles") or []), "tags": data.get("tags") or [],
                **self.scope_fields()}  # fmt: skip


class RotateForm(forms.Form):
    grace_hours = forms.IntegerField(
        min_value=0, max_value=MAX_ROTATION_GRACE_HOURS, initial=24, label="Grace period (hours)",
        help_text="How long the old key keeps working after the new one is issued.",
    )  # fmt: skip

    @property
    def grace(self) -> timedelta:
        return timedelta(hours=self.cleaned_data["grace_hours"])


class WhatIfForm(forms.Form):
    """The window a what-if replays: one of the last hour, day or week, or a range."""

    window = forms.ChoiceField(
        choices=[("hour", "The last hour"), ("day", "The last day"), ("week", "The last week"), ("", "From … to …")],
        required=False, initial="day",
    )  # fmt: skip
    start = forms.DateTimeField(required=False, help_text="UTC, e.g. 2026-01-05 09:00")
    end = forms.DateTimeField(required=False)

    def clean(self):
        from keys.whatif import window_of

        data = super().clean()
        if self.errors:
            return data
        window = data.get("window") or ""
        try:
            data["range"] = window_of(window, *(None, None) if window else (data.get("start"), data.get("end")))
        except ValidationError as error:
            for name, texts in error.message_dict.items():
                self.add_error(name if name in self.fields else None, texts)
        return data


class IdentityProviderForm(forms.ModelForm):
    audiences = TagListField(help_text="Comma-separated aud values accepted, e.g. gateway.")
    algorithms = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple, choices=[(name, name) for name in ("RS256", "ES256", "EdDSA")],
        help_text="The signing algorithms its tokens may use (HMAC and none are never accepted).",
    )  # fmt: skip
    claimable_clients = TagListField(
        required=False, help_text="With a client claim: comma-separated client slugs its tokens may name. Empty: any "
        "client that no other provider is fixed to.",
    )  # fmt: skip
    allowed_agents = TagListField(help_text="Comma-separated agent slugs its tokens may call, or * for all.")
    allowed_models = TagListField(help_text="Comma-separated model names, or * for every model of the agents.")

    class Meta:
        model = IdentityProvider
        fields = [
            "name", "slug", "issuer", "audiences", "jwks_url", "algorithms", "client", "client_claim",
            "claimable_clients", "roles_claim", "groups_claim", "leeway_seconds", "allowed_agents", "allowed_models",
            "requests_per_minute", "tokens_per_minute", "max_concurrent", "is_active",
        ]  # fmt: skip
        labels = {"jwks_url": "JWKS URL", "client": "Fixed client"}


class GuardrailForm(forms.ModelForm):
    detectors = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple,
        choices=[("email", "E-mail addresses"), ("phone", "Phone numbers"), ("card", "Card numbers (Luhn)"),
                 ("iban", "IBANs (mod 97)"), ("national_id", "National IDs (below)"),
                 ("secret", "Secrets and API keys"), ("injection", "Prompt injection (score)")],
    )  # fmt: skip
    national_ids = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="National IDs",
        choices=[("us_ssn", "US SSN"), ("uk_nino", "UK National Insurance"), ("es_dni", "Spanish DNI"),
                 ("nl_bsn", "Dutch BSN")],
    )  # fmt: skip
    clients = TagListField(required=False, help_text="Comma-separated client slugs; none (and no cost center): all.")
    cost_centers = TagListField(required=False, help_text="Comma-separated cost center slugs.")
    agents = TagListField(required=False, help_text="Comma-separated agent slugs; none: every agent.")

    class Meta:
        model = Guardrail
        fields = [
            "name", "description", "position", "stage", "detectors", "national_ids", "injection_threshold", "action",
            "clients", "cost_centers", "agents", "hook_url", "hook_timeout_ms", "hook_fail_open", "is_active",
        ]  # fmt: skip
        labels = {"hook_url": "Hook URL", "hook_timeout_ms": "Hook timeout (ms)", "hook_fail_open": "Fail open"}


class GuardrailTestForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), max_length=100_000, strip=False)
    stage = forms.ChoiceField(choices=[("input", "Input"), ("output", "Output")])
