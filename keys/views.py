"""Console pages for clients, their keys, cost centers and plans: thin views over ``keys.services``."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View

from audit.models import AuditRecord
from audit.trail import record_create, record_update, snapshot
from billing import overview
from billing.budgets import spent_in_window
from billing.models import NANOS_PER_USD, Budget
from billing.periods import MONTHLY, period_of
from billing.usage import daily_spend, monthly_usage, usage_by_key
from gateway_project import handoff, roles, throttles
from gateway_project.console import RoleRequiredMixin, TrailedDeleteView, TrailedEditView, agent_choices, sorted_page
from keys.forms import (
    LIMITS,
    AgentRoleForm,
    ApiKeyForm,
    ClientForm,
    CostCenterForm,
    GuardrailForm,
    GuardrailTestForm,
    IdentityProviderForm,
    KeyRolesForm,
    PlanForm,
    PolicyRuleForm,
    PolicyTestForm,
    RotateForm,
    WhatIfForm,
)
from keys.guardrail_tester import try_guardrails
from keys.identities import check_jwks
from keys.models import (
    AgentRole,
    ApiKey,
    Client,
    CostCenter,
    Guardrail,
    IdentityProvider,
    Plan,
    PolicyRule,
    PolicyWhatIf,
)
from keys.policy import compile_rules, explain
from keys.policy_drafts import RULE_FIELDS, drafts, publish_drafts, rules_to_test
from keys.services import (
    guardrail_activity,
    issue_key,
    policy_activity,
    revoke_key,
    role_holders,
    role_refusal,
    rotate_key,
)
from keys.whatif import percent as whatif_percent
from keys.whatif import request_what_if

# The session keeps only one-time tokens of hand-offs (gateway_project.handoff), by key id; never a raw key.
HANDOFF_SESSION = "issued_key_handoffs"
HANDOFFS_KEPT = 5  # a few tabs issuing keys at once; older tokens have expired anyway


class ClientListView(RoleRequiredMixin, View):
    def get(self, request):
        clients = Client.objects.select_related("cost_center").annotate(
            live_keys=Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True, api_keys__is_active=True))
        )
        if request.GET.get("q"):
            clients = clients.filter(Q(name__icontains=request.GET["q"]) | Q(slug__icontains=request.GET["q"]))
        page, sort = sorted_page(
            request, clients, {"name": "name", "slug": "slug", "created": "created_at", "keys": "live_keys"}, "name"
        )
        return render(request, "keys/client_list.html", {"page": page, "sort": sort})


class ClientEditView(TrailedEditView):
    model = Client
    form_class = ClientForm
    template_name = "keys/client_form.html"
    context_name = "client"

    def initial(self, request):
        return {"cost_center": request.GET["cost_center"]} if request.GET.get("cost_center") else {}

    def form_kwargs(self, request):
        return {"may_set_audit_policy": roles.may(request.user, roles.AUDIT_POLICY)}

    def saved_message(self, obj):
        return f"Client “{obj.name}” saved."

    def success_url(self, obj):
        return reverse("console:client", kwargs={"pk": obj.pk})


class ClientDetailView(RoleRequiredMixin, View):
    def get(self, request, pk):
        client = get_object_or_404(Client.objects.select_related("cost_center"), pk=pk)
        per_key = usage_by_key(client.pk)
        keys = list(client.api_keys.select_related("plan", "client"))
        for key in keys:
            key.month_usage = per_key.get(key.pk, {"requests": 0, "tokens": 0, "cost_usd": "0.000000"})
        context = {
            "client": client,
            "keys": keys,
            "usage": monthly_usage(client.pk),
            "budgets": overview.bars(overview.applying_to_client(client)),
            "spend_trend": daily_spend(client.pk),
            "recent": AuditRecord.objects.filter(client_id=client.pk).order_by("-created_at", "-id")[:20],
        }
        return render(request, "keys/client_detail.html", context)


class KeyCreateView(RoleRequiredMixin, View):
    needed_roles = roles.MANAGE

    def _render(self, request, client, form, status=200):
        plans = {plan.pk: plan.key_defaults() for plan in Plan.objects.all()}
        context = {"form": form, "client": client, "plan_limits": plans, "key_defaults": _key_defaults()}
        return render(request, "keys/key_form.html", context, status=status)

    def get(self, request, pk):
        client = get_object_or_404(Client, pk=pk)
        return self._render(request, client, ApiKeyForm(agent_choices=agent_choices(), initial={"all_agents": True}))

    def post(self, request, pk):
        client = get_object_or_404(Client, pk=pk)
        form = ApiKeyForm(request.POST, agent_choices=agent_choices())
        if not form.is_valid():
            return self._render(request, client, form, status=400)
        with transaction.atomic():
            key, raw = issue_key(client, **form.key_fields())
            record_create(request.user, "console", key)
            for budget in Budget.objects.filter(api_key=key):  # the plan's budget, given by a signal
                record_create(request.user, "console", budget)
        return _show_once(request, key, raw)


def _key_defaults() -> dict:
    """The limits a key without a plan gets for the fields left blank (the model's defaults)."""
    return {name: ApiKey._meta.get_field(name).default for name in LIMITS}


def _show_once(request, key: ApiKey, raw: str):
    """Hand the raw key to the next page view through an encrypted one-time hand-off; the session gets its token."""
    tokens = request.session.get(HANDOFF_SESSION, {})
    tokens[str(key.pk)] = handoff.put(raw, purpose=f"api-key:{key.pk}")
    request.session[HANDOFF_SESSION] = dict(list(tokens.items())[-HANDOFFS_KEPT:])
    return redirect("console:key-issued", pk=key.pk)


class KeyIssuedView(RoleRequiredMixin, View):
    """Shows the raw key exactly once: the hand-off is taken (and deleted) as the page renders."""

    needed_roles = roles.MANAGE

    def get(self, request, pk):
        key = get_object_or_404(ApiKey.objects.select_related("client"), pk=pk)
        tokens = request.session.get(HANDOFF_SESSION, {})
        token = tokens.pop(str(key.pk), None)
        raw = None
        if token is not None:
            request.session[HANDOFF_SESSION] = tokens
            raw = handoff.take(token, purpose=f"api-key:{key.pk}")
        response = render(request, "keys/key_issued.html", {"key": key, "raw": raw})
        response["Cache-Control"] = "no-store"
        return response


class KeyRevokeView(RoleRequiredMixin, View):
    needed_roles = roles.MANAGE

    def post(self, request, pk):
        key = get_object_or_404(ApiKey, pk=pk)
        before = snapshot(key)
        with transaction.atomic():
            revoke_key(key)
            record_update(request.user, "console", key, before, action="revoke")
        messages.success(request, f"Key {key.prefix}… revoked. Gateways refuse it within a second.")
        return redirect("console:client", pk=key.client_id)


class KeyRotateView(RoleRequiredMixin, View):
    needed_roles = roles.MANAGE

    def get(self, request, pk):
        key = get_object_or_404(ApiKey.objects.select_related("client"), pk=pk)
        return render(request, "keys/key_rotate.html", {"key": key, "form": RotateForm()})

    def post(self, request, pk):
        key = get_object_or_404(ApiKey.objects.select_related("client"), pk=pk)
        form = RotateForm(request.POST)
        if not form.is_valid():
            return render(request, "keys/key_rotate.html", {"key": key, "form": form}, status=400)
        before = snapshot(key)
        try:
            with transaction.atomic():
                successor, raw = rotate_key(key, form.grace)
                record_update(request.user, "console", key, before, action="rotate")
                record_create(request.user, "console", successor)
        except ValidationError as refusal:
            form.add_error(None, refusal.messages)
            return render(request, "keys/key_rotate.html", {"key": key, "form": form}, status=400)
        messages.success(request, f"Key {key.prefix}… keeps working until {key.expires_at:%Y-%m-%d %H:%M} UTC.")
        return _show_once(request, successor, raw)


class KeyRolesView(TrailedEditView):
    """The roles an issued key holds; every gateway process sees the change within a second."""

    model = ApiKey
    form_class = KeyRolesForm
    template_name = "keys/key_roles.html"
    context_name = "key"

    def saved_message(self, obj):
        held = ", ".join(obj.roles) or "no roles"
        return f"Key {obj.prefix}… now holds {held}. Gateways use the change within a second."

    def success_url(self, obj):
        return reverse("console:client", args=[obj.client_id])


# --- agent roles ------------------------------------------------------------------------------------------------


class AgentRoleListView(RoleRequiredMixin, View):
    def get(self, request):
        agent_roles = AgentRole.objects.prefetch_related("agents")
        page, sort = sorted_page(request, agent_roles, {"slug": "slug", "name": "name"}, "slug")
        for role in page:
            role.key_count = len(role_holders(role))
        return render(request, "keys/role_list.html", {"page": page, "sort": sort})


class AgentRoleEditView(TrailedEditView):
    model = AgentRole
    form_class = AgentRoleForm
    template_name = "keys/role_form.html"
    context_name = "role"
    success_url_name = "console:roles"

    def saved_message(self, obj):
        return f"Role “{obj.slug}” saved."


class AgentRoleDeleteView(TrailedDeleteView):
    """Refused while agents require the role; the keys holding it lose it."""

    model = AgentRole
    success_url_name = "console:roles"

    def refusal(self, obj):
        return role_refusal(obj)

    def nulled(self, obj):
        return role_holders(obj)

    def consequences(self, obj):
        return [f"The keys holding it lose it ({_count(len(role_holders(obj)), 'key')})."]

    def deleted_message(self, obj):
        return f"Role “{obj.slug}” deleted; the keys that held it no longer do."


# --- policy rules -----------------------------------------------------------------------------------------------


class PolicyListView(RoleRequiredMixin, View):
    def get(self, request):
        rules = list(PolicyRule.objects.filter(draft=False).select_related("pending_draft"))
        activity = policy_activity()
        for rule in rules:
            rule.denied, rule.would_deny, rule.failed = activity.get(rule.name, (0, 0, 0))
            rule.draft_change = getattr(rule, "pending_draft", None)
        context = {"rules": rules, "drafts": drafts(), "what_ifs": PolicyWhatIf.objects.all()[:3]}
        return render(request, "keys/policy_list.html", context)


class PolicyEditView(TrailedEditView):
    model = PolicyRule
    form_class = PolicyRuleForm
    template_name = "keys/policy_form.html"
    context_name = "rule"
    success_url_name = "console:policies"

    def saved_message(self, obj):
        if obj.draft:
            return f"Draft “{obj.name}” saved. It is not in force: try it with a what-if, then publish."
        return f"Rule “{obj.name}” saved. Every gateway process applies it within the refresh interval."


class PolicyDraftView(RoleRequiredMixin, View):
    """A draft change to a rule in force: the form starts from the rule; saving keeps it aside until published.
    A rule has one draft at a time: asking again opens it."""

    needed_roles = roles.MANAGE

    def _rule(self, pk):
        rule = get_object_or_404(PolicyRule, pk=pk, draft=False)
        existing = getattr(rule, "pending_draft", None)
        return rule, existing

    def get(self, request, pk):
        rule, existing = self._rule(pk)
        if existing is not None:
            return redirect("console:policy-edit", existing.pk)
        initial = {name: getattr(rule, name) for name in RULE_FIELDS}
        form = PolicyRuleForm(initial=initial, draft_of=rule)
        return render(request, "keys/policy_form.html", {"form": form, "draft_of": rule})

    def post(self, request, pk):
        rule, existing = self._rule(pk)
        if existing is not None:
            return redirect("console:policy-edit", existing.pk)
        form = PolicyRuleForm(request.POST, draft_of=rule)
        if not form.is_valid():
            return render(request, "keys/policy_form.html", {"form": form, "draft_of": rule}, status=400)
        with transaction.atomic():
            saved = form.save()
            record_create(request.user, "console", saved)
        messages.success(request, f"Draft of “{rule.name}” saved. The rule in force is unchanged until you publish.")
        return redirect("console:policies")


class PolicyPublishView(RoleRequiredMixin, View):
    """Put every draft in force at once (confirmed on a page listing them)."""

    needed_roles = roles.MANAGE

    def get(self, request):
        return render(request, "keys/policy_publish.html", {"drafts": drafts()})

    def post(self, request):
        try:
            published = publish_drafts(request.user, "console")
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return redirect("console:policy-publish")
        if published:
            names = ", ".join(f"“{rule.name}”" for rule in published)
            messages.success(request, f"Published {names}. Every gateway process applies them within the refresh "
                             "interval.")  # fmt: skip
        else:
            messages.info(request, "There were no drafts to publish.")
        return redirect("console:policies")


class WhatIfListView(RoleRequiredMixin, View):
    """Ask for a what-if (managers), and the recent ones with their outcome (every reader)."""

    def _render(self, request, form, status=200):
        context = {"form": form, "jobs": PolicyWhatIf.objects.select_related("requester")[:20], "drafts": drafts()}
        return render(request, "keys/whatif_list.html", context, status=status)

    def get(self, request):
        return self._render(request, WhatIfForm())

    def post(self, request):
        form = WhatIfForm(request.POST)
        if not form.is_valid():
            return self._render(request, form, status=400)
        wait = throttles.console_wait(request, throttles.EXPORT)  # shared with the API's what-ifs and exports
        if wait:
            form.add_error(None, f"Too many what-ifs and exports lately: try again in {wait} seconds.")
            return self._render(request, form, status=429)
        start, end = form.cleaned_data["range"]
        job = request_what_if(request.user, start, end, via="console")
        return redirect("console:policy-what-if", job.pk)


class WhatIfDetailView(RoleRequiredMixin, View):
    def get(self, request, pk):
        job = get_object_or_404(PolicyWhatIf.objects.select_related("requester"), pk=pk)
        context = {"job": job, "percent": whatif_percent(job), "running": job.status in (job.QUEUED, job.RUNNING)}
        return render(request, "keys/whatif_detail.html", context)


class PolicyDeleteView(TrailedDeleteView):
    model = PolicyRule
    success_url_name = "console:policies"

    def deleted_message(self, obj):
        return f"Rule “{obj.name}” deleted."


EXAMPLE_CONTEXT = """{
  "request": {"agent": "ledger", "model": "gpt-4o-mini", "method": "POST", "path": "/v1/chat/completions",
              "ip": "10.1.2.3", "body_bytes": 1200, "tokens": 300},
  "client": {"slug": "acme", "tags": ["finance"], "cost_center": "finance"},
  "key": {"prefix": "agk_abc", "tags": [], "roles": [], "plan": ""},
  "identity": {"subject": "", "roles": [], "groups": []},
  "now": "2026-01-05T09:30:00Z"
}"""


class PolicyTestView(RoleRequiredMixin, View):
    """Run the active rules on a request context the user writes: which rule decides, and each rule's outcome.
    It changes nothing, so every role that reads the rules may post it."""

    write_roles = roles.READ

    def get(self, request):
        form = PolicyTestForm(initial={"context": EXAMPLE_CONTEXT})
        return render(request, "keys/policy_test.html", {"form": form})

    def post(self, request):
        form = PolicyTestForm(request.POST)
        if not form.is_valid():
            return render(request, "keys/policy_test.html", {"form": form}, status=400)
        rules = compile_rules(rules_to_test(form.cleaned_data["drafts"]))
        decision, outcomes = explain(rules, form.cleaned_data["context"])
        context = {"form": form, "decision": decision, "outcomes": outcomes, "tested": True}
        return render(request, "keys/policy_test.html", context)


# --- cost centers -----------------------------------------------------------------------------------------------


def _month_spend_usd(cost_center_id: int):
    """What the cost center spent this month, counted as its budgets count it."""
    return Decimal(spent_in_window(Budget.COST_CENTER, cost_center_id, period_of(MONTHLY))) / NANOS_PER_USD


class CostCenterListView(RoleRequiredMixin, View):
    def get(self, request):
        centers = CostCenter.objects.annotate(client_count=Count("clients"))
        if request.GET.get("q"):
            text = request.GET["q"]
            centers = centers.filter(Q(name__icontains=text) | Q(slug__icontains=text) | Q(code__icontains=text))
        page, sort = sorted_page(
            request, centers, {"name": "name", "slug": "slug", "code": "code", "clients": "client_count"}, "name"
        )
        for center in page:
            center.month_spend = _month_spend_usd(center.pk)
        return render(request, "keys/cost_center_list.html", {"page": page, "sort": sort})


class CostCenterDetailView(RoleRequiredMixin, View):
    def get(self, request, pk):
        center = get_object_or_404(CostCenter, pk=pk)
        context = {
            "center": center,
            "clients": center.clients.annotate(live_keys=Count(
                "api_keys", filter=Q(api_keys__revoked_at__isnull=True, api_keys__is_active=True))),
            "budgets": overview.bars(overview.with_targets(center.budgets.all())),
            "month_spend": _month_spend_usd(center.pk),
        }  # fmt: skip
        return render(request, "keys/cost_center_detail.html", context)


class CostCenterEditView(TrailedEditView):
    model = CostCenter
    form_class = CostCenterForm
    template_name = "keys/cost_center_form.html"
    context_name = "center"

    def saved_message(self, obj):
        return f"Cost center “{obj.name}” saved."

    def success_url(self, obj):
        return reverse("console:cost-center", kwargs={"pk": obj.pk})


class CostCenterDeleteView(TrailedDeleteView):
    """Clients stay, without a cost center; its budgets go with it. Past usage keeps its attribution."""

    model = CostCenter
    success_url_name = "console:cost-centers"

    def nulled(self, obj):
        return list(obj.clients.all())

    def cascaded(self, obj):
        return list(obj.budgets.all())

    def consequences(self, obj):
        clients, budgets = obj.clients.count(), obj.budgets.count()
        return [
            f"Its clients keep existing; their cost center becomes empty ({_count(clients, 'client')}).",
            f"Its budgets are deleted with it ({_count(budgets, 'budget')}).",
            "Usage already attributed to it keeps that attribution in reports.",
        ]

    def cancel_url(self, obj):
        return reverse("console:cost-center", kwargs={"pk": obj.pk})

    def deleted_message(self, obj):
        return f"Cost center “{obj.name}” deleted; its clients now have none."


# --- plans ------------------------------------------------------------------------------------------------------


class PlanListView(RoleRequiredMixin, View):
    def get(self, request):
        plans = Plan.objects.annotate(key_count=Count("api_keys"))
        page, sort = sorted_page(request, plans, {"name": "name", "slug": "slug", "keys": "key_count"}, "name")
        return render(request, "keys/plan_list.html", {"page": page, "sort": sort})


class PlanEditView(TrailedEditView):
    model = Plan
    form_class = PlanForm
    template_name = "keys/plan_form.html"
    context_name = "plan"
    success_url_name = "console:plans"

    def saved_message(self, obj):
        return f"Plan “{obj.name}” saved. New keys on it get these limits; existing keys keep theirs."


class PlanDeleteView(TrailedDeleteView):
    """Keys on the plan keep their limits and budgets; only their link to the plan goes."""

    model = Plan
    success_url_name = "console:plans"

    def nulled(self, obj):
        return list(obj.api_keys.all())

    def consequences(self, obj):
        keys = obj.api_keys.count()
        return [f"Its keys keep their limits and budgets; they just no longer name a plan ({_count(keys, 'key')})."]

    def deleted_message(self, obj):
        return f"Plan “{obj.name}” deleted; keys keep their limits."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# --- identity providers ---------------------------------------------------------------------------------------


class IdentityProviderListView(RoleRequiredMixin, View):
    def get(self, request):
        providers = IdentityProvider.objects.select_related("client").annotate(key_count=Count("identity_keys"))
        context = {"providers": providers, "may_configure": roles.may(request.user, roles.IDENTITY)}
        return render(request, "keys/identity_provider_list.html", context)


class IdentityProviderEditView(TrailedEditView):
    model = IdentityProvider
    form_class = IdentityProviderForm
    template_name = "keys/identity_provider_form.html"
    context_name = "provider"
    success_url_name = "console:identity-providers"
    needed_roles = roles.IDENTITY
    write_roles = roles.IDENTITY

    def saved_message(self, obj):
        return f"Identity provider “{obj.name}” saved. Every gateway process reads it within the refresh interval."


class IdentityProviderDeleteView(TrailedDeleteView):
    model = IdentityProvider
    success_url_name = "console:identity-providers"
    needed_roles = write_roles = roles.IDENTITY

    def deleted_message(self, obj):
        return f"Identity provider “{obj.name}” deleted; its identity keys are revoked."


class IdentityProviderCheckView(RoleRequiredMixin, View):
    """Fetch a provider's key set now, as the gateway would, and show what it holds."""

    write_roles = roles.READ  # it changes nothing

    def post(self, request, pk):
        provider = get_object_or_404(IdentityProvider, pk=pk)
        result = check_jwks(provider)
        context = {"provider": provider, "result": result}
        return render(request, "keys/identity_provider_check.html", context)


# --- guardrails -------------------------------------------------------------------------------------------------


class GuardrailListView(RoleRequiredMixin, View):
    def get(self, request):
        rails = list(Guardrail.objects.all())
        activity = guardrail_activity()
        for rail in rails:
            rail.counts = activity.get(rail.name, {"block": 0, "redact": 0, "flag": 0})
        return render(request, "keys/guardrail_list.html", {"rails": rails})


class GuardrailEditView(TrailedEditView):
    model = Guardrail
    form_class = GuardrailForm
    template_name = "keys/guardrail_form.html"
    context_name = "rail"
    success_url_name = "console:guardrails"

    def saved_message(self, obj):
        return f"Guardrail “{obj.name}” saved. Every gateway process applies it within the refresh interval."


class GuardrailDeleteView(TrailedDeleteView):
    model = Guardrail
    success_url_name = "console:guardrails"

    def deleted_message(self, obj):
        return f"Guardrail “{obj.name}” deleted."


class GuardrailTestView(RoleRequiredMixin, View):
    """What each active guardrail would find in a text and do; it changes nothing, so every reader may post it."""

    write_roles = roles.READ

    def get(self, request):
        return render(request, "keys/guardrail_test.html", {"form": GuardrailTestForm()})

    def post(self, request):
        form = GuardrailTestForm(request.POST)
        if not form.is_valid():
            return render(request, "keys/guardrail_test.html", {"form": form}, status=400)
        results = try_guardrails(form.cleaned_data["text"], form.cleaned_data["stage"])
        return render(request, "keys/guardrail_test.html", {"form": form, "results": results, "tested": True})
