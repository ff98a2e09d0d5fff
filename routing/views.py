"""Console pages for agents (upstreams): list (with their targets' live health), create, edit with targets,
deactivate, close circuits. Agents are never deleted here."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from audit.trail import record_action, record_create, record_delete, record_update, snapshot
from gateway_project import roles
from gateway_project.console import RoleRequiredMixin, TrailedEditView, TrailedToggleView, sorted_page
from keys.models import Client
from routing import response_cache
from routing.circuits import agent_health, reset_circuits
from routing.forms import AgentForm, TargetFormSet
from routing.models import Agent
from routing.table import not_served_reason

CLEARED_MESSAGE = (
    "The stored upstream API key of {names} was removed: its URL now names another scheme, host or port, and a "
    "credential is never sent to a host it was not set for. Type it again if the new host needs it."
)


class AgentListView(RoleRequiredMixin, View):
    def get(self, request):
        agents = Agent.objects.all()
        if request.GET.get("q"):
            agents = agents.filter(Q(name__icontains=request.GET["q"]) | Q(slug__icontains=request.GET["q"]))
        agents = agents.prefetch_related("targets")
        page, sort = sorted_page(request, agents, {"slug": "slug", "kind": "kind", "name": "name"}, "slug")
        for agent in page:
            agent.health = agent_health(agent)["targets"] if agent.is_active else []
            agent.not_served = not_served_reason(agent)
        return render(request, "routing/agent_list.html", {"page": page, "sort": sort})


class AgentEditView(TrailedEditView):
    model = Agent
    form_class = AgentForm
    template_name = "routing/agent_form.html"
    context_name = "agent"
    success_url_name = "console:agents"

    def saved_message(self, obj):
        return f"Agent “{obj.slug}” saved. Gateways pick up the change within their refresh."

    def _render(self, request, form, obj, status=200, targets=None):
        if obj is not None and targets is None:
            targets = TargetFormSet(instance=obj)
        health = agent_health(obj)["targets"] if obj is not None and obj.is_active else []
        not_served = not_served_reason(obj) if obj is not None else ""
        cache = response_cache.cache_stats(obj.slug) if obj is not None and obj.cache_enabled else None
        context = {
            "form": form, "agent": obj, "targets": targets, "health": health, "not_served": not_served, "cache": cache,
        }  # fmt: skip
        return render(request, self.template_name, context, status=status)

    def post(self, request, pk=None):
        if pk is None:
            return super().post(request)  # a new agent gets its targets on its edit page
        agent = get_object_or_404(Agent, pk=pk)
        before = snapshot(agent)
        targets_before = {target.pk: snapshot(target) for target in agent.targets.all()}  # validation changes them
        form = AgentForm(request.POST, instance=agent)
        # A post without the targets' management form (a script) leaves the targets as they are.
        targets = TargetFormSet(request.POST, instance=agent) if "targets-TOTAL_FORMS" in request.POST else None
        if not (form.is_valid() and (targets is None or targets.is_valid())):
            agent.refresh_from_db()
            return self._render(request, form, agent, status=400, targets=targets)
        with transaction.atomic():
            saved = form.save()
            record_update(request.user, "console", saved, before, after=snapshot(saved))
            cleared = [saved.slug] if saved.credential_cleared else []
            if targets is not None:
                cleared += self._save_targets(request, targets, targets_before)
        messages.success(request, self.saved_message(saved))
        if cleared:
            messages.warning(request, CLEARED_MESSAGE.format(names=", ".join(cleared)))
        return redirect(self.success_url(saved))

    @staticmethod
    def _save_targets(request, targets, changed_before: dict) -> list[str]:
        """Save the formset, each created, changed or deleted target in the admin-action trail; return the targets
        whose own credential was removed because their URL moved to another origin."""
        cleared = []
        saved = targets.save(commit=False)
        for target in targets.deleted_objects:
            before, target_pk = changed_before.get(target.pk) or snapshot(target), target.pk
            target.delete()
            target.pk = target_pk
            record_delete(request.user, "console", target, before)
        for target in saved:
            is_new = target.pk is None
            target.save()
            if target.credential_cleared:
                cleared.append(str(target))
            if is_new:
                record_create(request.user, "console", target)
            else:
                record_update(request.user, "console", target, changed_before[target.pk], after=snapshot(target))
        return cleared


class AgentToggleView(TrailedToggleView):
    """Deactivate an active agent, or activate an inactive one."""

    model = Agent
    success_url_name = "console:agents"

    def toggled_message(self, obj, action):
        return f"Agent “{obj.slug}” {action}d."


class AgentResetCircuitView(RoleRequiredMixin, View):
    """Close an agent's circuits by hand (POST only): its targets take traffic again at once."""

    needed_roles = roles.MANAGE

    def post(self, request, pk):
        agent = get_object_or_404(Agent, pk=pk)
        with transaction.atomic():
            closed = reset_circuits(agent, request.POST.get("target") or None)
            record_action(request.user, "console", "reset_circuit", agent, {"targets": closed})
        messages.success(request, f"Circuits of “{agent.slug}” closed: {', '.join(closed) or 'none'}.")
        if request.POST.get("next") == "edit":
            return redirect("console:agent-edit", pk=agent.pk)
        return redirect("console:agents")


class ForgetCacheView(RoleRequiredMixin, View):
    """Forget what the response cache holds for an agent (every client's) or a client (its own; POST only)."""

    needed_roles = roles.MANAGE
    model = Agent

    def post(self, request, pk):
        target = get_object_or_404(self.model, pk=pk)
        response_cache.forget(target, request.user, "console")
        if isinstance(target, Client):
            messages.success(request, f"The answers cached for “{target.slug}” are forgotten.")
            return redirect("console:client", pk=target.pk)
        messages.success(request, f"The cached answers of “{target.slug}” are forgotten.")
        return redirect("console:agent-edit", pk=target.pk)
