"""Shared pieces of the web console: role checks for views, the page context, pagination and sorting."""

from __future__ import annotations

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator

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
