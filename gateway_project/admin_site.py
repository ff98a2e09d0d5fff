"""Django admin as a read-only window for superusers: changes are made where the admin-action trail records them.

The console, the API and the management commands record every change in the
trail, through the services that also keep the gateway's caches right; a save
in Django admin would do neither. So every model registered here, by any app,
is shown without add, change or delete, and without its secret fields (the
trail's ``SECRET_FIELDS``: a key's hash, a password; and every encrypted field, such as
upstream credentials and webhook signing secrets).
Management API tokens (``keys.ApiToken``, hashed) are not registered at all.
"""

from __future__ import annotations

from django.contrib import admin

from audit.trail import SECRET_FIELDS
from gateway_project import signin
from gateway_project.credentials import secret_field_names


def _secrets(model) -> frozenset[str]:
    return SECRET_FIELDS | secret_field_names(model)


def _without_secrets(names, model) -> list:
    hidden = _secrets(model)
    return [name for name in names if name not in hidden]


class ReadOnlyAdminMixin:
    """Shows a model, never changes it, and leaves its secret fields out of every page and search."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_exclude(self, request, obj=None):
        return [*(super().get_exclude(request, obj) or ()), *_secrets(self.model)]

    def get_fields(self, request, obj=None):
        return _without_secrets(super().get_fields(request, obj), self.model)

    def get_fieldsets(self, request, obj=None):
        return [
            (name, {**options, "fields": _without_secrets(options.get("fields", ()), self.model)})
            for name, options in super().get_fieldsets(request, obj)
        ]

    def get_readonly_fields(self, request, obj=None):
        return _without_secrets(super().get_readonly_fields(request, obj), self.model)

    def get_list_display(self, request):
        return _without_secrets(super().get_list_display(request), self.model)

    def get_search_fields(self, request):
        return _without_secrets(super().get_search_fields(request), self.model)


def read_only(admin_class: type) -> type:
    """``admin_class`` (and its inlines) made read-only and free of secrets."""
    inlines = [read_only(inline) for inline in getattr(admin_class, "inlines", ())]
    return type(f"ReadOnly{admin_class.__name__}", (ReadOnlyAdminMixin, admin_class), {"inlines": inlines})


class GatewayAdminSite(admin.AdminSite):
    """Django admin for superusers only; everyone else works in the console, whose roles apply."""

    login_form = signin.AdminSignInForm  # the console's sign-in throttle and events

    def has_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def login(self, request, extra_context=None):
        return signin.answer(request, super().login(request, extra_context))

    def register(self, model_or_iterable, admin_class=None, **options):
        super().register(model_or_iterable, read_only(admin_class or admin.ModelAdmin), **options)
