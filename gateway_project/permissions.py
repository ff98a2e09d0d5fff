"""The management API's permission: roles decide (kept apart from ``api.py`` to avoid an import cycle with DRF)."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from gateway_project import roles


class RolePermission(BasePermission):
    """Reads need one of the view's ``read_roles``, changes one of its ``write_roles``.

    Defaults fit the management resources: every role reads, admins and
    operators change. A user with no role is refused everything (403). Actions
    a view lists in ``read_only_actions`` (testers: POSTed, but changing nothing)
    need only a read role.
    """

    message = "Your role does not allow this."

    def has_permission(self, request, view):
        needed = getattr(view, "read_roles", roles.READ)
        if request.method not in SAFE_METHODS and getattr(view, "action", None) not in getattr(
            view, "read_only_actions", ()
        ):
            needed = getattr(view, "write_roles", roles.MANAGE)
        return roles.may(request.user, needed)
