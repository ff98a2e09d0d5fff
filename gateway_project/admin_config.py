"""Django admin with the gateway's read-only site (its own module: INSTALLED_APPS loads it before any model)."""

from django.contrib.admin.apps import AdminConfig


class GatewayAdminConfig(AdminConfig):
    """``django.contrib.admin`` with ``GatewayAdminSite``.

    Management API tokens (``keys.ApiToken``) are not registered: the admin has nothing to show of them
    that the trail does not, and DRF's token app, whose admin listed tokens in clear, is not installed.
    """

    default_site = "gateway_project.admin_site.GatewayAdminSite"
