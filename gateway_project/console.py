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

from audit.trail import record_create, record_delete, record_update, snapshot
from gateway_project import roles

PAGE_SIZE = 25
# The console's navigation: areas in the top bar, the pages of the area shown in a second row. Each page: its URL
# name, its label, the stems of the URL names that belong to it (a name equal to a stem or starting "<stem>-"),
# and the roles that see it.
NAV = [
    ("Dashboard", [("dashboard", "Dashboard", ("dashboard",), None)]),
    ("Access", [
        ("clients", "Clients", ("client", "clients", "key"), roles.READ),
        ("roles", "Roles", ("role", "roles"), roles.READ),
        ("identity-providers", "Identity providers", ("identity-provider", "identity-providers"), roles.READ),
    ]),
    ("Routing", [
        ("agents", "Agents", ("agent", "agents"), roles.READ),
        ("routes", "Routes", ("route", "routes"), roles.READ),
        ("keywords", "Content routing", ("keyword", "keywords"), roles.READ),
        ("auto-routes", "Auto-routing", ("auto-route", "auto-routes"), roles.READ),
    ]),
    ("Governance", [
        ("policies", "Policies", ("policy", "policies"), roles.READ),
        ("guardrails", "Guardrails", ("guardrail", "guardrails"), roles.READ),
    ]),
    ("Spend", [
        ("budgets", "Budgets", ("budget", "budgets"), roles.READ),
        ("alerts", "Alerts", ("alert", "alerts"), roles.READ),
        ("cost-centers", "Cost centers", ("cost-center", "cost-centers"), roles.READ),
        ("plans", "Plans", ("plan", "plans"), roles.READ),
        ("prices", "Prices", ("price", "prices"), roles.READ),
        ("reports", "Reports", ("reports",), roles.READ),
    ]),
    ("Compliance", [
        ("audit", "Audit log", ("audit",), roles.READ),
        ("trail", "Admin actions", ("trail",), roles.EXPORT),
        ("retention", "Retention", ("retention",), roles.EXPORT),
        ("exports", "Exports", ("export", "exports"), roles.EXPORT),
    ]),
    ("People", [
        ("users", "Users", ("user", "users"), roles.USERS),
        ("auth-events", "Sign-ins", ("auth-events",), roles.USERS),
    ]),
]  # fmt: skip


def _is_page(url_name: str, stems: tuple[str, ...]) -> bool:
    return any(url_name == stem or url_name.startswith(stem + "-") for stem in stems)


def navigation(user, url_name: str) -> tuple[list[dict], list[dict]]:
    """The top bar's areas the user may see (each linking to its first page), and the pages of the current area
    (shown as a second row when it has more than one)."""
    areas, current = [], []
    for label, pages in NAV:
        visible = [
            {"url": reverse(f"console:{name}"), "label": text, "active": _is_page(url_name, stems)}
            for name, text, stems, needed in pages
            if needed is None or roles.may(user, needed)
        ]
        if not visible:
            continue
        active = any(page["active"] for page in visible)
        areas.append({"label": label, "url": visible[0]["url"], "active": active})
        if active and len(visible) > 1:
            current = visible
    return areas, current


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
    url_name = getattr(getattr(request, "resolver_match", None), "url_name", None) or ""
    areas, pages = navigation(user, url_name)
    return {
        "nav_areas": areas,
        "nav_pages": pages,
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

    def after_save(self, request, obj) -> None:
        """Called once the save is committed (to keep a secret made by it for its one showing, say)."""

    success_url_name = ""

    def success_url(self, obj) -> str:
        return reverse(self.success_url_name)

    def _render(self, request, form, obj, status=200):
        return render(request, self.template_name, {"form": form, self.context_name: obj}, status=status)

    def initial(self, request) -> dict:
        """Values a new object's form starts with (e.g. from the query string of a "new …" link)."""
        return {}

    def form_kwargs(self, request) -> dict:
        """Further arguments of the form, e.g. what the user's role lets them change."""
        return {}

    def get(self, request, pk=None):
        obj = get_object_or_404(self.model, pk=pk) if pk else None
        initial = None if obj else self.initial(request)
        return self._render(request, self.form_class(instance=obj, initial=initial, **self.form_kwargs(request)), obj)

    def post(self, request, pk=None):
        obj = get_object_or_404(self.model, pk=pk) if pk else None
        before = self.snapshot(obj) if obj else None
        form = self.form_class(request.POST, instance=obj, **self.form_kwargs(request))
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
        self.after_save(request, saved)
        messages.success(request, self.saved_message(saved))
        return redirect(self.success_url(saved))


class TrailedToggleView(RoleRequiredMixin, View):
    """Deactivate an active object or activate an inactive one (POST only), recorded in the trail."""

    model = None
    needed_roles = roles.MANAGE
    success_url_name = ""

    def toggled_message(self, obj, action: str) -> str:
        return f"“{obj}” {action}d."

    def post(self, request, pk):
        obj = get_object_or_404(self.model, pk=pk)
        before = snapshot(obj)
        obj.is_active = not obj.is_active
        action = "activate" if obj.is_active else "deactivate"
        with transaction.atomic():
            obj.save(update_fields=["is_active", "updated_at"])
            record_update(request.user, "console", obj, before, action=action)
        messages.success(request, self.toggled_message(obj, action))
        return redirect(self.success_url_name)


class TrailedDeleteView(RoleRequiredMixin, View):
    """Ask first (GET), then delete one object (POST); the trail records it and what the deletion did to others.

    ``nulled(obj)`` names the objects whose reference to it is emptied (``SET_NULL``) and
    ``cascaded(obj)`` the ones deleted with it, so each gets its own row in the trail.
    ``refusal(obj)`` says why it may not be deleted (the page then answers 400).
    """

    model = None
    needed_roles = roles.MANAGE
    template_name = "console/confirm_delete.html"
    success_url_name = ""

    def consequences(self, obj) -> list[str]:
        return []

    def refusal(self, obj) -> str:
        return ""

    def nulled(self, obj) -> list:
        return []

    def cascaded(self, obj) -> list:
        return []

    def cancel_url(self, obj) -> str:
        return reverse(self.success_url_name)

    def success_url(self, obj) -> str:
        return reverse(self.success_url_name)

    def deleted_message(self, obj) -> str:
        return f"“{obj}” deleted."

    def _render(self, request, obj, status=200, refusal=""):
        context = {
            "object": obj,
            "kind": obj._meta.verbose_name,
            "consequences": self.consequences(obj),
            "refusal": refusal,
            "cancel_url": self.cancel_url(obj),
        }
        return render(request, self.template_name, context, status=status)

    def get(self, request, pk):
        obj = get_object_or_404(self.model, pk=pk)
        return self._render(request, obj, refusal=self.refusal(obj))

    def post(self, request, pk):
        with transaction.atomic():
            obj = get_object_or_404(self.model.objects.select_for_update(), pk=pk)
            refusal = self.refusal(obj)
            if refusal:
                return self._render(request, obj, status=400, refusal=refusal)
            nulled = [(other, snapshot(other)) for other in self.nulled(obj)]
            cascaded = [(other, other.pk, snapshot(other)) for other in self.cascaded(obj)]
            before, obj_pk = snapshot(obj), obj.pk
            obj.delete()
            obj.pk = obj_pk
            record_delete(request.user, "console", obj, before)
            for other, other_before in nulled:
                other.refresh_from_db()
                record_update(request.user, "console", other, other_before)
            for other, other_pk, other_before in cascaded:
                other.pk = other_pk
                record_delete(request.user, "console", other, other_before)
        messages.success(request, self.deleted_message(obj))
        return redirect(self.success_url(obj))
