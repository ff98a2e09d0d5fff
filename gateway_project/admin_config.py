"""Django admin with the gateway's read-only site (its own module: INSTALLED_APPS loads it before any model)."""

from django.apps import apps
from django.contrib import admin
from django.contrib.admin.apps import AdminConfig


class GatewayAdminConfig(AdminConfig):
    """``django.contrib.admin`` with ``GatewayAdminSite``, and without DRF's token admin (it lists tokens in clear)."""

    default_site = "gateway_project.admin_site.GatewayAdminSite"

    def ready(self):
        super().ready()
        for model in apps.get_app_config("authtoken").get_models():
            if admin.site.is_registered(model):
                admin.site.unregister(model)
