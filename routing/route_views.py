"""Console pages for path routes and for content routing's keyword map."""

from __future__ import annotations

from django.db.models import Q
from django.shortcuts import render
from django.views import View

from gateway_project import roles
from gateway_project.console import (
    RoleRequiredMixin,
    TrailedDeleteView,
    TrailedEditView,
    TrailedToggleView,
    sorted_page,
)
from routing.models import Agent, CapabilityKeyword, PathRoute
from routing.route_forms import CapabilityKeywordForm, PathRouteForm

REFRESH_NOTE = "Gateways pick up the change within their refresh."


class RouteListView(RoleRequiredMixin, View):
    def get(self, request):
        routes = PathRoute.objects.select_related("agent")
        if request.GET.get("q"):
            query = request.GET["q"]
            routes = routes.filter(Q(prefix__icontains=query) | Q(agent__slug__icontains=query))
        page, sort = sorted_page(request, routes, {"prefix": "prefix", "agent": "agent__slug"}, "prefix")
        return render(request, "routing/route_list.html", {"page": page, "sort": sort})


class RouteEditView(TrailedEditView):
    model = PathRoute
    form_class = PathRouteForm
    template_name = "routing/route_form.html"
    context_name = "route"
    success_url_name = "console:routes"

    def saved_message(self, obj):
        return f"Route {obj.prefix} saved. {REFRESH_NOTE}"


class RouteToggleView(TrailedToggleView):
    """Deactivate an active route (its paths then go to the gateway's own pages again), or activate it."""

    model = PathRoute
    success_url_name = "console:routes"

    def toggled_message(self, obj, action):
        return f"Route {obj.prefix} {action}d. {REFRESH_NOTE}"


class RouteDeleteView(TrailedDeleteView):
    model = PathRoute
    success_url_name = "console:routes"

    def deleted_message(self, obj):
        return f"Route {obj.prefix} deleted. {REFRESH_NOTE}"


def capability_table() -> list[dict]:
    """Every capability named by a keyword or an agent: its keywords and the agents that have it."""
    rows: dict[str, dict] = {}
    for keyword in CapabilityKeyword.objects.all():
        rows.setdefault(keyword.capability, {"keywords": [], "agents": []})["keywords"].append(keyword)
    for agent in Agent.objects.order_by("slug"):
        for capability in dict.fromkeys(word.lower() for word in agent.capabilities or ()):
            rows.setdefault(capability, {"keywords": [], "agents": []})["agents"].append(agent)
    return [{"capability": name, **rows[name]} for name in sorted(rows)]


class KeywordListView(RoleRequiredMixin, View):
    def get(self, request):
        form = CapabilityKeywordForm() if roles.may(request.user, roles.MANAGE) else None
        return render(request, "routing/keyword_list.html", {"rows": capability_table(), "form": form})


class KeywordEditView(TrailedEditView):
    model = CapabilityKeyword
    form_class = CapabilityKeywordForm
    template_name = "routing/keyword_form.html"
    context_name = "keyword"
    success_url_name = "console:keywords"

    def saved_message(self, obj):
        return f"“{obj.keyword}” now routes to the capability “{obj.capability}”. {REFRESH_NOTE}"


class KeywordDeleteView(TrailedDeleteView):
    model = CapabilityKeyword
    success_url_name = "console:keywords"
