"""Console pages for model auto-routing's rules: list, create, edit, move up or down, delete."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from audit.trail import record_update, snapshot
from gateway_project import roles
from gateway_project.console import RoleRequiredMixin, TrailedDeleteView, TrailedEditView
from routing import auto_route
from routing.auto_route_forms import AutoRouteRuleForm
from routing.auto_signals import REASONING_CUES
from routing.models import AutoRouteRule
from routing.route_views import REFRESH_NOTE


class AutoRouteListView(RoleRequiredMixin, View):
    def get(self, request):
        rules = AutoRouteRule.objects.select_related("agent").order_by("agent__slug", "is_default", "position", "pk")
        scopes: dict[str, list[AutoRouteRule]] = {}
        for rule in rules:
            scopes.setdefault(rule.agent.slug if rule.agent_id else "", []).append(rule)
        context = {
            "scopes": [{"agent": scope, "rules": scopes[scope]} for scope in sorted(scopes)],
            "unserved": auto_route.unserved_models(rules),
            "cues": sorted(REASONING_CUES),
        }
        return render(request, "routing/auto_route_list.html", context)


class AutoRouteEditView(TrailedEditView):
    model = AutoRouteRule
    form_class = AutoRouteRuleForm
    template_name = "routing/auto_route_form.html"
    context_name = "rule"
    success_url_name = "console:auto-routes"

    def saved_message(self, obj):
        return f"Auto-routing rule “{obj.name}” saved. {REFRESH_NOTE}"


class AutoRouteMoveView(RoleRequiredMixin, View):
    """Move a rule one place up or down among its agent's (or the model “auto”'s) rules (POST only)."""

    needed_roles = roles.MANAGE

    def post(self, request, pk, direction):
        if direction not in ("up", "down"):
            raise Http404("Move a rule up or down.")
        rule = get_object_or_404(AutoRouteRule, pk=pk)
        if rule.is_default:
            messages.error(request, "The default rule is always tried last; it has no place to move to.")
            return redirect("console:auto-routes")
        moved = auto_route.reordered(rule, -1 if direction == "up" else 1)
        with transaction.atomic():
            for sibling, position in moved:
                before = snapshot(sibling)
                sibling.position = position
                sibling.save(update_fields=["position", "updated_at"])
                record_update(request.user, "console", sibling, before, action="reorder")
        if moved:
            messages.success(request, f"“{rule.name}” moved {direction}. {REFRESH_NOTE}")
        else:
            messages.info(request, f"“{rule.name}” is already {'first' if direction == 'up' else 'last'}.")
        return redirect("console:auto-routes")


class AutoRouteDeleteView(TrailedDeleteView):
    model = AutoRouteRule
    success_url_name = "console:auto-routes"

    def deleted_message(self, obj):
        return f"Auto-routing rule “{obj.name}” deleted. {REFRESH_NOTE}"
