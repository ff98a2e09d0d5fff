"""The management API's pagination (its own module: DRF imports it while ``gateway_project.api`` is loading)."""

from rest_framework.pagination import LimitOffsetPagination


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """Limit/offset pages of at most 1000 rows: a larger ``?limit=`` gets 1000, so no list reads a whole table."""

    max_limit = 1000
