"""Cost centers, plans, clients and API keys in the management API: serializers, filtersets and viewsets."""

from datetime import timedelta

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Count
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from audit.trail import record_create, record_delete, record_update, snapshot
from gateway_project import roles, throttles
from gateway_project.api import (
    SEARCHABLE_FILTER_BACKENDS,
    NameListField,
    TrailedModelViewSet,
    as_it_would_be_saved,
)
from keys import whatif
from keys.guardrail_tester import try_guardrails
from keys.identities import check_jwks
from keys.models import (
    ALL,
    AgentRole,
    ApiKey,
    Client,
    CostCenter,
    Guardrail,
    IdentityProvider,
    Plan,
    PolicyRule,
    PolicyWhatIf,
    validate_role_list,
)
from keys.policy import compile_rules, context_from_json, explain
from keys.policy_drafts import publish_drafts, rules_to_test
from keys.services import (
    DEFAULT_ROTATION_GRACE,
    MAX_ROTATION_GRACE_HOURS,
    issue_key,
    revoke_key,
    role_holders,
    role_refusal,
    rotate_key,
)

KEY_STATUSES = ["active", "expired", "disabled", "revoked", "client_disabled"]


class CostCenterSerializer(serializers.ModelSerializer):
    client_count = serializers.SerializerMethodField(help_text="How many clients belong to it.")

    class Meta:
        model = CostCenter
        fields = ["id", "name", "slug", "code", "client_count", "created_at"]
        read_only_fields = ["created_at"]

    def get_client_count(self, cost_center) -> int:
        counted = getattr(cost_center, "client_count", None)
        return cost_center.clients.count() if counted is None else counted


class CostCenterViewSet(TrailedModelViewSet):
    """Cost centers: the teams or departments clients belong to, whose spend is attributed and budgeted to them.

    Deleting one leaves its clients without a cost center and deletes its budgets;
    past usage keeps its attribution.
    """

    queryset = CostCenter.objects.annotate(client_count=Count("clients"))
    serializer_class = CostCenterSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    search_fields = ["name", "slug", "code"]
    ordering_fields = ["name", "slug", "code", "created_at"]


class PlanSerializer(serializers.ModelSerializer):
    class Meta:
        model = Plan
        fields = [
            "id",
            "name",
            "slug",
            "requests_per_minute",
            "requests_per_day",
            "tokens_per_minute",
            "max_concurrent",
            "monthly_budget_usd",
            "created_at",
        ]
        read_only_fields = ["created_at"]


class PlanViewSet(TrailedModelViewSet):
    """Plans (free, pro, enterprise …): the limits and monthly budget a new key starts with.

    A plan's values are copied when a key is issued; changing a plan later does
    not change the keys already issued on it.
    """

    queryset = Plan.objects.all()
    serializer_class = PlanSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    search_fields = ["name", "slug"]
    ordering_fields = ["name", "slug", "created_at"]


class AgentRoleSerializer(serializers.ModelSerializer):
    agents = serializers.SlugRelatedField(
        slug_field="slug", many=True, read_only=True, help_text="The agents that require it."
    )
    key_count = serializers.SerializerMethodField(help_text="How many keys hold it.")

    class Meta:
        model = AgentRole
        fields = ["id", "slug", "name", "description", "agents", "key_count", "created_at"]
        read_only_fields = ["created_at"]

    def validate_slug(self, slug):
        if self.instance is not None and slug != self.instance.slug:
            raise serializers.ValidationError(
                "Keys and agents name a role by its slug: create a new role and move them to it instead."
            )
        return slug

    def get_key_count(self, role) -> int:
        return len(role_holders(role))


class AgentRoleViewSet(TrailedModelViewSet):
    """Agent roles: an agent may require one (``required_role`` on the agent), and only keys holding it (``roles``
    on the key) may call the agent; others get 403 ``role_required``.

    A role that agents require cannot be deleted (400): change those agents first.
    Deleting a role takes it from the keys that held it.
    """

    queryset = AgentRole.objects.prefetch_related("agents")
    serializer_class = AgentRoleSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    search_fields = ["slug", "name", "description"]
    ordering_fields = ["slug", "name", "created_at"]

    def perform_destroy(self, instance):
        refusal = role_refusal(instance)
        if refusal:
            raise ValidationError({"detail": refusal})
        holders = [(key, snapshot(key)) for key in role_holders(instance)]
        before, pk = snapshot(instance), instance.pk
        with transaction.atomic():
            instance.delete()
            instance.pk = pk
            record_delete(self.request.user, "api", instance, before)
            for key, key_before in holders:
                key.refresh_from_db()
                record_update(self.request.user, "api", key, key_before)


class PolicyRuleSerializer(serializers.ModelSerializer):
    draft_of = serializers.PrimaryKeyRelatedField(
        queryset=PolicyRule.objects.filter(draft=False), required=False, allow_null=True,
        help_text="The rule in force this draft changes when published (a draft only; one draft a rule).",
    )  # fmt: skip

    class Meta:
        model = PolicyRule
        fields = [
            "id", "name", "description", "position", "effect", "condition", "final", "dry_run", "message",
            "is_active", "draft", "draft_of", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["created_at", "updated_at"]
        # The model's own checks run in validate: a name is unique only among rules that are not drafts of another.
        validators = []
        extra_kwargs = {"name": {"validators": []}}

    def validate(self, attrs):
        current = self.instance
        if current is not None and "draft" in attrs and attrs["draft"] != current.draft:
            raise ValidationError({"draft": ["A rule in force stays in force; a draft is published with publish/."]})
        if current is not None and "draft_of" in attrs and attrs["draft_of"] != current.draft_of:
            raise ValidationError({"draft_of": ["A draft keeps the rule it changes; make a new draft instead."]})
        rule = as_it_would_be_saved(PolicyRule, current, attrs)
        if rule.draft_of_id is not None and not rule.draft:
            raise ValidationError({"draft_of": ["Only a draft changes another rule: set draft too."]})
        if rule.draft_of_id is not None and current is None and PolicyRule.objects.filter(draft_of=rule.draft_of_id):
            raise ValidationError({"draft_of": ["This rule has a draft already: change that one."]})
        try:
            rule.full_clean(exclude=["condition"], validate_unique=True)
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from None
        return attrs


class PolicyTestSerializer(serializers.Serializer):
    context = serializers.JSONField(
        help_text="The request to try: {request: {agent, model, method, path, route, ip, body_bytes, tokens}, "
        "client: {slug, tags, cost_center}, key: {prefix, tags, roles, plan}, identity: {subject, roles, groups}, "
        "now: ISO 8601}; fields left out are empty (now: the current minute)."
    )
    drafts = serializers.BooleanField(
        default=False, help_text="Run the rules as they would be with the drafts published, not those in force."
    )


POLICY_TEST_ANSWER = inline_serializer(
    "PolicyTestAnswer",
    {
        "allowed": serializers.BooleanField(),
        "denied_by": serializers.CharField(allow_null=True),
        "notes": serializers.DictField(help_text="What the audit record would keep (details.policy)."),
        "rules": serializers.ListField(child=serializers.DictField(), help_text="Each active rule's outcome."),
    },
)


class PolicyRuleViewSet(TrailedModelViewSet):
    """Policy rules: CEL conditions on every gateway request, run in ``position`` order.

    The first enforced ``deny`` whose condition holds refuses the request (403
    ``policy_denied``, naming the rule); an ``allow`` marked ``final`` stops the
    evaluation; ``dry_run`` rules are only recorded (``details.policy`` of the audit
    record). A condition is checked when saved: a syntax error (with its line and
    column), a name or field the context does not have, or a result other than true or
    false is a 400. Changes are in force on every gateway process within the refresh
    interval. ``POST policy-rules/test/`` runs the active rules on a request context.

    A rule saved with ``draft`` is not in force: a new rule, or, with ``draft_of``, a change
    to a rule that is. ``POST policy-what-ifs/`` replays the draft set over the request log
    of a window; ``POST policy-rules/publish/`` puts every draft in force at once.
    """

    queryset = PolicyRule.objects.all()
    serializer_class = PolicyRuleSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    filterset_fields = ["effect", "is_active", "dry_run", "draft"]
    read_only_actions = ("test",)  # it changes nothing: every role may try the rules
    search_fields = ["name", "description", "condition"]
    ordering_fields = ["position", "name", "created_at"]

    @extend_schema(
        summary="Publish every draft",
        request=None,
        responses={
            200: inline_serializer("PublishedRules", {"published": PolicyRuleSerializer(many=True)}),
            400: OpenApiResponse(description="A draft cannot be published (nothing is)."),
        },
    )
    @action(detail=False, methods=["post"], filterset_fields=None)
    def publish(self, request):
        """Put every draft in force at once (a draft of a rule replaces it); the rules published. All or none."""
        try:
            published = publish_drafts(request.user, "api")
        except DjangoValidationError as error:
            raise ValidationError({"detail": error.messages}) from None
        return Response({"published": PolicyRuleSerializer(published, many=True).data})

    @extend_schema(
        summary="Try the active rules on a request",
        request=PolicyTestSerializer,
        responses={200: POLICY_TEST_ANSWER, 400: OpenApiResponse(description="A context that is not one.")},
    )
    @action(detail=False, methods=["post"], serializer_class=PolicyTestSerializer)
    def test(self, request):
        """Which rule decides ``context``, and what each active rule makes of it; nothing is recorded."""
        asked = PolicyTestSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        try:
            context = context_from_json(asked.validated_data["context"])
        except ValueError as error:
            raise ValidationError({"context": [str(error)]}) from None
        rules = compile_rules(rules_to_test(asked.validated_data["drafts"]))
        decision, outcomes = explain(rules, context)
        return Response({
            "allowed": decision.denied_by is None,
            "denied_by": decision.denied_by.name if decision.denied_by is not None else None,
            "notes": decision.notes,
            "rules": [outcome._asdict() for outcome in outcomes],
        })  # fmt: skip


class ClientSerializer(serializers.ModelSerializer):
    class Meta:
        model = Client
        fields = [
            "id", "name", "slug", "contact", "cost_center", "tags", "allowed_origins", "is_active",
            "requests_per_minute", "tokens_per_minute", "audit_previews", "audit_retention_days", "created_at",
        ]  # fmt: skip
        read_only_fields = ["created_at"]
        extra_kwargs = {name: {"help_text": f"{Client._meta.get_field(name).help_text} Admins only."}
                        for name in Client.AUDIT_POLICY_FIELDS}  # fmt: skip

    def validate(self, attrs):
        """What the audit log keeps of a client is the admins' to change: others get 403 (the same value passes)."""
        request = self.context.get("request")
        if request is not None and not roles.may(request.user, roles.AUDIT_POLICY):
            changed = [
                name for name in Client.AUDIT_POLICY_FIELDS
                if name in attrs and attrs[name] != _current(self.instance, name)
            ]  # fmt: skip
            if changed:
                raise PermissionDenied(f"Only admins may change {' and '.join(changed)}.")
        return attrs


def _current(client: Client | None, name: str):
    """The field's value on ``client``, or the model's default for a new one."""
    return getattr(client, name) if client is not None else Client._meta.get_field(name).get_default()


class ClientViewSet(TrailedModelViewSet):
    """Clients: the programs or teams that own keys, a budget and spend."""

    queryset = Client.objects.all()
    serializer_class = ClientSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    filterset_fields = ["is_active", "cost_center"]
    search_fields = ["name", "slug"]
    ordering_fields = ["name", "slug", "created_at"]


class ScopeListField(NameListField):
    """Agent slugs or model names a key may use; ``["*"]`` for all.

    Required and never empty: an empty scope would allow nothing, which is never
    what a caller creating a key means; ``["*"]`` says "everything" explicitly.
    """

    default_error_messages = {"empty": f'Give at least one name, or ["{ALL}"] for all.'}

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_empty", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        names = super().to_internal_value(data)
        if ALL in names and names != [ALL]:
            raise serializers.ValidationError(f'Use ["{ALL}"] on its own to allow all.')
        return names


class ApiKeySerializer(serializers.ModelSerializer):
    client_slug = serializers.CharField(source="client.slug", read_only=True)
    allowed_agents = ScopeListField(help_text='Agent slugs this key may call; ["*"] allows every agent.')
    allowed_models = ScopeListField(
        required=False, help_text='Model names this key may request; ["*"] allows every model (the default).'
    )
    roles = NameListField(
        required=False, help_text="Slugs of the agent roles the key holds: an agent that requires a role serves only "
        "keys holding it. Each must exist (``/agent-roles/``).",
    )  # fmt: skip
    status = serializers.ChoiceField(choices=KEY_STATUSES, read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "client",
            "client_slug",
            "name",
            "prefix",
            "status",
            "allowed_agents",
            "allowed_models",
            "roles",
            "tags",
            "plan",
            "requests_per_minute",
            "requests_per_day",
            "tokens_per_minute",
            "max_concurrent",
            "is_active",
            "expires_at",
            "revoked_at",
            "replaced_by",
            "last_used_at",
            "created_at",
        ]
        read_only_fields = ["prefix", "revoked_at", "replaced_by", "last_used_at", "created_at"]
        extra_kwargs = {
            "plan": {"help_text": "The plan the key was issued on: it gives the limits (and budget) not set here."},
            "replaced_by": {"help_text": "The key issued when this one was rotated; it expires at the grace's end."},
            "requests_per_minute": {"min_value": 1},
            "requests_per_day": {"min_value": 0, "help_text": "0 means no daily limit."},
            "tokens_per_minute": {"min_value": 1},
            "max_concurrent": {"min_value": 0},
        }

    def validate_roles(self, roles):
        try:
            validate_role_list(roles)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.messages) from None
        return roles

    def validate_client(self, client):
        if self.instance is not None and client != self.instance.client:
            raise serializers.ValidationError("A key cannot move to another client; issue a new key instead.")
        return client

    def validate_plan(self, plan):
        if self.instance is not None and getattr(plan, "pk", None) != self.instance.plan_id:
            raise serializers.ValidationError(
                "A key's plan is where its limits came from when it was issued; change the limits instead."
            )
        return plan


class IssuedApiKeySerializer(ApiKeySerializer):
    """A key as issued: the only representation that ever carries the raw secret."""

    key = serializers.SerializerMethodField(help_text="The raw key. Shown in this response only: store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]

    def create(self, validated_data):
        key, self._raw_key = issue_key(**validated_data)
        return key

    def get_key(self, key) -> str:
        return getattr(self, "_raw_key", None) or self.context["raw_key"]


class KeyRotationSerializer(serializers.Serializer):
    grace_hours = serializers.IntegerField(
        min_value=0, max_value=MAX_ROTATION_GRACE_HOURS, default=int(DEFAULT_ROTATION_GRACE.total_seconds()) // 3600,
        help_text=f"How long the old key keeps working after the new one is issued (0 to {MAX_ROTATION_GRACE_HOURS}).",
    )  # fmt: skip

    @property
    def grace(self) -> timedelta:
        return timedelta(hours=self.validated_data["grace_hours"])


class RotatedApiKeySerializer(serializers.Serializer):
    """What a rotation answers: the successor with its raw key (this once) and the old key as it now stands."""

    successor = IssuedApiKeySerializer(read_only=True, help_text="The new key; its raw `key` is shown here only.")
    rotated = ApiKeySerializer(read_only=True, help_text="The old key: it works until its `expires_at`.")


class ApiKeyFilter(filters.FilterSet):
    class Meta:
        model = ApiKey
        fields = ["client", "client__slug", "plan", "is_active", "prefix"]


@extend_schema_view(create=extend_schema(request=ApiKeySerializer, responses={201: IssuedApiKeySerializer}))
class ApiKeyViewSet(TrailedModelViewSet):
    """API keys. Creating one returns the raw key once; it is stored only as a hash.

    A key issued on a ``plan`` takes the plan's limits for those not given, and its
    own monthly budget if the plan has one.

    Revoke a key with ``POST /keys/{id}/revoke/``: that is the normal way to end a
    key, and it keeps the row so usage and audit records still name it. ``DELETE``
    removes the key for good. ``POST /keys/{id}/rotate/`` issues a successor with the
    same scopes and limits and lets the old key work for a grace period.
    """

    queryset = ApiKey.objects.select_related("client")
    filterset_class = ApiKeyFilter
    ordering_fields = ["created_at", "last_used_at", "name"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_serializer_class(self):
        if self.action == "rotate":
            return KeyRotationSerializer
        return IssuedApiKeySerializer if self.action == "create" else ApiKeySerializer

    def perform_create(self, serializer):
        with transaction.atomic():
            key = serializer.save()
            self._record_issue(key)

    def _record_issue(self, key):
        record_create(self.request.user, "api", key)
        # The budget the key's plan gave it (billing's signal) is a change too.
        for budget in key.budgets.all():
            record_create(self.request.user, "api", budget)

    @extend_schema(
        summary="Rotate the key",
        request=KeyRotationSerializer,
        responses={
            201: RotatedApiKeySerializer,
            400: OpenApiResponse(description="A grace out of bounds, or a key that is revoked, expired, disabled or "
                                 "already rotated."),
        },
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        """Issue a successor with the same scopes and limits; the old key keeps working for ``grace_hours``."""
        key = self.get_object()
        asked = KeyRotationSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        before = snapshot(key)
        with transaction.atomic():
            successor, raw = rotate_key(key, asked.grace)
            record_update(request.user, "api", key, before, action="rotate")
            self._record_issue(successor)
        context = {**self.get_serializer_context(), "raw_key": raw}
        body = RotatedApiKeySerializer({"successor": successor, "rotated": key}, context=context).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=ApiKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Revoke the key now; every gateway process refuses it within a second."""
        key = self.get_object()
        before = snapshot(key)
        with transaction.atomic():
            revoke_key(key)
            record_update(request.user, "api", key, before, action="revoke")
        return Response(self.get_serializer(key).data)


class PolicyWhatIfSerializer(serializers.ModelSerializer):
    percent = serializers.SerializerMethodField(help_text="Records replayed out of the window's, 0 to 100.")
    requester = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = PolicyWhatIf
        fields = [
            "id", "requester", "window_start", "window_end", "status", "percent", "records_total",
            "records_scanned", "results", "error", "live_rules", "draft_rules", "created_at", "started_at",
            "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_percent(self, job) -> int:
        return whatif.percent(job)


class PolicyWhatIfRequestSerializer(serializers.Serializer):
    window = serializers.ChoiceField(
        choices=list(whatif.WINDOWS), required=False, allow_blank=True, default="",
        help_text="The last hour, day or week; or give start and end instead.",
    )  # fmt: skip
    start = serializers.DateTimeField(required=False, allow_null=True, default=None)
    end = serializers.DateTimeField(required=False, allow_null=True, default=None)


class PolicyWhatIfViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """What-ifs: the draft rule set replayed over the request log of a window, in the background.

    The result says how many of the window's requests the drafts would refuse (by rule,
    client and agent) that the rules in force let through, and the other way round, with
    up to 50 of the newly refused requests by id. Records from before the gateway kept the
    request context (``details.context``) are counted as ``without_context``.
    """

    queryset = PolicyWhatIf.objects.select_related("requester")
    serializer_class = PolicyWhatIfSerializer
    filterset_fields = ["status"]
    ordering_fields = ["created_at"]
    ordering = ["-created_at"]
    action_throttle_scopes = {"create": throttles.EXPORT}

    @extend_schema(
        summary="Replay the drafts over a window",
        request=PolicyWhatIfRequestSerializer,
        responses={202: PolicyWhatIfSerializer, 400: OpenApiResponse(description="Not a window."),
                   429: throttles.THROTTLED},
    )  # fmt: skip
    def create(self, request, *args, **kwargs):
        asked = PolicyWhatIfRequestSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        data = asked.validated_data
        try:
            start, end = whatif.window_of(data["window"], data["start"], data["end"])
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from None
        job = whatif.request_what_if(request.user, start, end, via="api")
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)


class IdentityProviderSerializer(serializers.ModelSerializer):
    client = serializers.SlugRelatedField(
        slug_field="slug", queryset=Client.objects.all(), required=False, allow_null=True,
        help_text="Every token's client (its slug). Empty: the client_claim names it.",
    )  # fmt: skip
    identity_keys = serializers.SerializerMethodField(help_text="Clients whose tokens from it were served.")

    class Meta:
        model = IdentityProvider
        fields = [
            "id", "name", "slug", "issuer", "audiences", "jwks_url", "algorithms", "client", "client_claim",
            "claimable_clients", "roles_claim", "groups_claim", "leeway_seconds", "allowed_agents", "allowed_models",
            "requests_per_minute", "tokens_per_minute", "max_concurrent", "is_active", "identity_keys", "created_at",
        ]  # fmt: skip
        read_only_fields = ["created_at"]

    def get_identity_keys(self, provider) -> int:
        return provider.identity_keys.count()

    def validate(self, attrs):
        provider = as_it_would_be_saved(IdentityProvider, self.instance, attrs)
        try:
            provider.clean()
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from None
        return attrs


JWKS_CHECK = inline_serializer(
    "JwksCheck",
    {
        "ok": serializers.BooleanField(),
        "keys": serializers.ListField(child=serializers.DictField(), help_text="kid and algorithm of each key."),
        "error": serializers.CharField(help_text="Why the key set could not be read; empty when it could."),
    },
)


class IdentityProviderViewSet(TrailedModelViewSet):
    """Identity providers: issuers of JWTs the gateway accepts as ``Authorization: Bearer <token>``.

    A token is verified against the provider's JWKS (RS256, ES256 or EdDSA; ``exp``,
    ``iat`` and ``sub`` required; ``nbf`` honoured; ``leeway_seconds`` of clock skew), for
    one of its ``audiences``. Its client is ``client`` or the client whose slug the
    ``client_claim`` holds; its roles and groups come from ``roles_claim`` and
    ``groups_claim``. Each client's tokens are served through an identity key with the
    provider's scopes and limits. Admins only change them. ``POST {id}/check/`` fetches
    the JWKS now and says which keys it holds.
    """

    queryset = IdentityProvider.objects.select_related("client")
    serializer_class = IdentityProviderSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    filterset_fields = ["is_active"]
    search_fields = ["name", "slug", "issuer"]
    ordering_fields = ["name", "created_at"]
    write_roles = roles.IDENTITY

    @extend_schema(summary="Fetch the provider's key set now", request=None, responses={200: JWKS_CHECK})
    @action(detail=True, methods=["post"], filterset_fields=None)
    def check(self, request, pk=None):
        """Fetch the JWKS through the outbound policy, as the gateway does, and list the keys it would use."""
        return Response(check_jwks(self.get_object()))


class GuardrailSerializer(serializers.ModelSerializer):
    class Meta:
        model = Guardrail
        fields = [
            "id", "name", "description", "position", "stage", "detectors", "national_ids", "injection_threshold",
            "action", "clients", "cost_centers", "agents", "hook_url", "hook_timeout_ms", "hook_fail_open",
            "is_active", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["created_at", "updated_at"]

    def validate(self, attrs):
        try:
            as_it_would_be_saved(Guardrail, self.instance, attrs).clean()
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from None
        return attrs


class GuardrailTestSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=100_000, trim_whitespace=False, help_text="The text to try.")
    stage = serializers.ChoiceField(choices=["input", "output"], default="input")


class GuardrailViewSet(TrailedModelViewSet):
    """Guardrails: detectors run on what clients send (input) and on the answers (output).

    ``detectors``: ``email``, ``phone``, ``card`` (Luhn-checked), ``iban`` (mod-97-checked),
    ``national_id`` (of ``national_ids``: ``us_ssn``, ``uk_nino``, ``es_dni``, ``nl_bsn``),
    ``secret`` (cloud, GitHub, OpenAI, Slack and Google keys, private keys, JWTs, the
    gateway's own keys) and ``injection`` (a prompt-injection score of 0-100, finding from
    ``injection_threshold``). ``action``: ``block`` (400 ``guardrail_blocked`` on input, 403 on
    output), ``redact`` (a placeholder such as ``[EMAIL]`` in place of the text) or ``flag``
    (recorded only). Scoped to ``clients`` and ``cost_centers`` (none: every client) and
    ``agents`` (none: every agent). ``hook_url``: an external check POSTed ``{guardrail,
    stage, text, request_id}`` that answers ``{"allow": true|false}``, failing open or
    closed. ``POST guardrails/test/`` runs the active guardrails on a text.
    """

    queryset = Guardrail.objects.all()
    serializer_class = GuardrailSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    filterset_fields = ["stage", "action", "is_active"]
    search_fields = ["name", "description"]
    ordering_fields = ["position", "name", "created_at"]
    read_only_actions = ("test",)  # it changes nothing: every role may try the guardrails

    @extend_schema(
        summary="Try the active guardrails on a text",
        request=GuardrailTestSerializer,
        responses={200: inline_serializer("GuardrailTestAnswer", {
            "results": serializers.ListField(child=serializers.DictField()),
        })},
    )  # fmt: skip
    @action(detail=False, methods=["post"], serializer_class=GuardrailTestSerializer)
    def test(self, request):
        """What each active guardrail of the stage finds in ``text`` and would do; nothing is sent or recorded
        (hooks are not called)."""
        asked = GuardrailTestSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        return Response({"results": try_guardrails(asked.validated_data["text"], asked.validated_data["stage"])})
