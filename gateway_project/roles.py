"""Who may do what in the console and the management API.

Three roles, kept as Django groups so they are managed like any other:
``admin`` (everything, user management included), ``operator`` (clients,
keys, budgets, agents and prices) and ``compliance`` (reads everything,
exports the audit log, changes nothing). A superuser is an admin.
"""

from __future__ import annotations

ADMIN = "admin"
OPERATOR = "operator"
COMPLIANCE = "compliance"
ROLES = (ADMIN, OPERATOR, COMPLIANCE)

# What each kind of action needs; an admin may always.
MANAGE = frozenset({ADMIN, OPERATOR})  # change clients, keys, budgets, agents, prices
READ = frozenset({ADMIN, OPERATOR, COMPLIANCE})  # see them, and the request log
EXPORT = frozenset({ADMIN, COMPLIANCE})  # export the audit log, read the admin-action trail
USERS = frozenset({ADMIN})  # manage console users and their roles
AUDIT_POLICY = frozenset({ADMIN})  # change what the audit log keeps (redaction rules)
QUARANTINE = frozenset({ADMIN})  # see rows the database refused, with their unredacted values
IDENTITY = frozenset({ADMIN})  # configure who may sign tokens the gateway accepts (identity providers)


def roles_of(user) -> frozenset[str]:
    """The roles of ``user`` (cached on the user object for the request)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    cached = getattr(user, "_gateway_roles", None)
    if cached is None:
        names = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        if user.is_superuser:
            names.add(ADMIN)
        cached = user._gateway_roles = frozenset(names)
    return cached


def may(user, needed: frozenset[str]) -> bool:
    """Whether ``user`` holds one of the ``needed`` roles (admins hold them all)."""
    held = roles_of(user)
    return ADMIN in held or bool(held & needed)
