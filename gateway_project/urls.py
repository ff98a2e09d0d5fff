from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

handler404 = "gateway_project.api.not_found"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="console:dashboard", permanent=False)),
    path("console/", include("gateway_project.console_urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("gateway_project.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
]

if settings.OIDC_RP_CLIENT_ID:  # console sign-in through the OpenID Connect provider (gateway_project/oidc.py)
    urlpatterns.append(path("oidc/", include("mozilla_django_oidc.urls")))
