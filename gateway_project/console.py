"""Shared pieces of the web console: role checks for views, the page context, pagination and sorting."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View

from audit.trail import record_create, record_update, snapshot
from gateway_project import roles

PAGE_SIZE = 25


class RoleRequiredMixin(LoginRequiredMixin):
    """Signed-in users only; then 403 unless they hold one of ``needed_roles`` (``write_roles`` for POST)."""

    needed_roles = roles.READ
    write_roles = roles.MANAGE

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        needed = self.write_roles if request.method not in ("GET", "HEAD", "OPTIONS") else self.needed_roles
        if not roles.may(request.user, needed):
            raise PermissionDenied("Your role does not allow this page.")
        return super().dispatch(request, *args, **kwargs)


def console_context(request):
    """Template context: the user's roles and what the navigation may offer them."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "user_roles": sorted(roles.roles_of(user)),
        "can_manage": roles.may(user, roles.MANAGE),
        "can_export": roles.may(user, roles.EXPORT),
        "can_read": roles.may(user, roles.READ),
        "can_manage_users": roles.may(user, roles.USERS),
    }


def sorted_page(request, queryset, sortable: dict[str, str], default: str):
    """Sort by ``?sort=<name>`` or ``?sort=-<name>`` among ``sortable`` and paginate by ``?page=``.

    Returns the page and the current sort key, for the template's column links.
    """
    sort = request.GET.get("sort", default)
    field = sortable.get(sort.lstrip("-"))
    if field is None:
        sort, field = default, sortable[default.lstrip("-")]
    ordering = f"-{field}" if sort.startswith("-") else field
    page = Paginator(queryset.order_by(ordering, "-pk"), PAGE_SIZE).get_page(request.GET.get("page"))
    return page, sort


def agent_choices() -> list[str]:
    """Slugs of the active agents, for forms in apps that must not import ``routing``."""
    from routing.models import Agent

    return list(Agent.objects.filter(is_active=True).order_by("slug").values_list("slug", flat=True))


class TrailedEditView(RoleRequiredMixin, View):
    """Create (no ``pk``) or edit one object through a ModelForm; the change goes into the admin-action trail.

    Subclasses name the ``model``, ``form_class``, ``template_name``, the template's
    name for the object (``context_name``), where to go after saving and what to say.
    Opening the form needs a managing role too, not just saving it.
    """

    model = None
    form_class = None
    template_name = ""
    context_name = "object"
    needed_roles = roles.MANAGE

    def snapshot(self, obj) -> dict:
        return snapshot(obj)

    def saved_message(self, obj) -> str:
        return f"“{obj}” saved."

    success_url_name = ""

    def success_url(self, obj) -> str:
        return reverse(self.success_url_name)

    def _render(self, request, form, obj, status=200):
        return render(request, self.template_name, {"form": form, self.context_name: obj}, status=status)

    def get(self, request, pk=None):
        obj = get_object_or_404(self.model, pk=pk) if pk else None
        return self._render(request, self.form_class(instance=obj), obj)

    def post(self, request, pk=None):
        obj = get_object_or_404(self.model, pk=pk) if pk else None
        before = self.snapshot(obj) if obj else None
        form = self.form_class(request.POST, instance=obj)
        if not form.is_valid():
            if obj:
                obj.refresh_from_db()  # headings name the stored object, not the rejected values
            return self._render(request, form, obj, status=400)
        with transaction.atomic():
            saved = form.save()
            if before is None:
                record_create(request.user, "console", saved)
            else:
                record_update(request.user, "console", saved, before, after=self.snapshot(saved))
        messages.success(request, self.saved_message(saved))
        return redirect(self.success_url(saved))
