"""The console's own pages: sign-in (throttled), sign-out and the dashboard."""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views.generic import TemplateView
from django_ratelimit.decorators import ratelimit

from audit.quarantine import quarantined_count
from audit.stats import traffic_summary
from billing.overview import open_alert_count
from billing.usage import spend_summary
from gateway_project import roles
from gateway_project.console import RoleRequiredMixin


@method_decorator(ratelimit(key="ip", rate=lambda group, request: settings.LOGIN_RATE, method="POST"), name="post")
class LoginView(auth_views.LoginView):
    """Django's sign-in, refused with 429 after too many attempts from one address."""

    template_name = "console/login.html"
    redirect_authenticated_user = True


def rate_limited(request, exception):
    return render(request, "console/rate_limited.html", status=429)


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
