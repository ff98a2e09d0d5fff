"""The console's own pages: sign-in (throttled), the sign-in events, and the dashboard."""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.shortcuts import render
from django.views import View
from django.views.generic import TemplateView

from audit.quarantine import quarantined_count
from audit.stats import traffic_summary
from billing.overview import open_alert_count
from billing.usage import spend_summary
from gateway_project import oidc, roles, signin
from gateway_project.auth_events import AuthEventFilterForm
from gateway_project.console import RoleRequiredMixin, sorted_page


class LoginView(auth_views.LoginView):
    """Django's sign-in under the sign-in throttle: a throttled attempt gets the form's error and 429."""

    template_name = "console/login.html"
    authentication_form = signin.SignInForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        if oidc.enabled():
            context["oidc_name"] = settings.GATEWAY_OIDC_NAME
            context["sso_failed"] = self.request.GET.get("sso") == "failed"
        return context

    def post(self, request, *args, **kwargs):
        return signin.answer(request, super().post(request, *args, **kwargs))


class AuthEventListView(RoleRequiredMixin, View):
    """Sign-ins, failures, throttled attempts, sign-outs and refused API tokens (admins only)."""

    needed_roles = roles.USERS

    def get(self, request):
        form = AuthEventFilterForm(request.GET or None)
        page, sort = sorted_page(
            request, form.filter(), {"time": "created_at", "username": "username", "outcome": "outcome"}, "-time"
        )
        query = request.GET.copy()
        query.pop("page", None)
        query.pop("sort", None)
        context = {"form": form, "page": page, "sort": sort, "query": query.urlencode()}
        status = 400 if request.GET and not form.is_valid() else 200
        return render(request, "console/auth_events.html", context, status=status)


class DashboardView(RoleRequiredMixin, TemplateView):
    template_name = "console/dashboard.html"

    def get_context_data(self, **kwargs):
        context = {**super().get_context_data(**kwargs), **traffic_summary(), **spend_summary()}
        return {
            **context,
            "open_alerts": open_alert_count(),
            "quarantined": quarantined_count(),
            "can_see_quarantine": roles.may(self.request.user, roles.QUARANTINE),
        }
