"""Console pages for agents (upstreams): list, create, edit, deactivate. Agents are never deleted here."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from audit.trail import record_update, snapshot
from gateway_project import roles
from gateway_project.console import RoleRequiredMixin, TrailedEditView, sorted_page
from routing.forms import AgentForm
from routing.models import Agent


class AgentListView(RoleRequiredMixin, View):
    def get(self, request):
        agents = Agent.objects.all()
        if request.GET.get("q"):
            agents = agents.filter(Q(name__icontains=request.GET["q"]) | Q(slug__icontains=request.GET["q"]))
        page, sort = sorted_page(request, agents, {"slug": "slug", "kind": "kind", "name": "name"}, "slug")
        return render(request, "routing/agent_list.html", {"page": page, "sort": sort})


class AgentEditView(TrailedEditView):
    model = Agent
    form_class = AgentForm
    template_name = "routing/agent_form.html"
    context_name = "agent"
    success_url_name = "console:agents"

    def saved_message(self, obj):
        return f"Agent “{obj.slug}” saved. Gateways pick up the change within their refresh."


class AgentToggleView(RoleRequiredMixin, View):
    """Deactivate an active agent, or activate an inactive one (POST only)."""

    needed_roles = roles.MANAGE

    def post(self, request, pk):
        agent = get_object_or_404(Agent, pk=pk)
        before = snapshot(agent)
        agent.is_active = not agent.is_active
        action = "activate" if agent.is_active else "deactivate"
        with transaction.atomic():
            agent.save(update_fields=["is_active", "updated_at"])
            record_update(request.user, "console", agent, before, action=action)
        messages.success(request, f"Agent “{agent.slug}” {action}d.")
        return redirect("console:agents")
