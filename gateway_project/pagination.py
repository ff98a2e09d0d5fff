"""The management API's pagination (its own module: DRF imports it while ``gateway_project.api`` is loading)."""

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination, LimitOffsetPagination
from rest_framework.response import Response

MAX_PAGE_SIZE = 1000


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """Limit/offset pages of at most 1000 rows: a larger ``?limit=`` gets 1000, so no list reads a whole table.

    For the small collections people edit (clients, keys, agents …): offsets stay right while nobody
    is adding rows faster than a reader pages, and ``count`` is cheap.
    """

    max_limit = MAX_PAGE_SIZE


class AppendOnlyCursorPagination(CursorPagination):
    """Cursor pages of an append-only collection (audit log, trail, usage …), newest first by id.

    An offset counts rows from the head, so each row written while a client pages
    shifts every later page (rows listed twice) and each row deleted before the
    client's place (retention) shifts them back (rows skipped). A cursor names the
    last id seen instead: ids are unique and never change, new rows take higher ids
    and deletions leave the other ids where they were, so one pass lists every row
    that exists throughout exactly once. For the chained logs the id order is the
    seq order: their writers take the chain's lock before inserting.

    ``?limit=`` is the page size (at most 1000); ``?ordering=id`` pages oldest first.
    Other orderings are refused: only a unique, unchanging key keeps the promise.
    """

    ordering = "-id"
    ORDERINGS = ("-id", "id")
    page_size_query_param = "limit"
    page_size_query_description = f"Rows per page (at most {MAX_PAGE_SIZE})."
    max_page_size = MAX_PAGE_SIZE
    cursor_query_description = "Where the page starts: the `cursor` of the previous answer's `next` link, as given."

    def paginate_queryset(self, queryset, request, view=None):
        if "offset" in request.query_params:
            raise ValidationError(
                {"offset": "This list pages by cursor: follow the `next` link of each page (it carries `cursor`)."}
            )
        return super().paginate_queryset(queryset, request, view)

    def get_ordering(self, request, queryset, view):
        asked = request.query_params.get("ordering")
        if asked is None or asked == "":
            return (self.ordering,)
        if asked not in self.ORDERINGS:
            raise ValidationError(
                {"ordering": "This list is paged by cursor and can only be ordered by `-id` (newest first) or `id`."}
            )
        return (asked,)

    def decode_cursor(self, request):
        """DRF's cursor, with a malformed one refused as a 400 that says what to pass."""
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            cursor = False
        if cursor is False or (cursor is not None and cursor.position is not None and not _is_int(cursor.position)):
            raise ValidationError({"cursor": "Not a cursor of this list: pass the `cursor` of a `next` link as given."})
        return cursor


def _is_int(text: str) -> bool:
    digits = text.removeprefix("-")
    return digits.isascii() and digits.isdigit() and len(digits) <= 18  # within a bigint, whatever the database


class CountedCursorPagination(AppendOnlyCursorPagination):
    """Cursor pages with the collection's ``count``: for append-only sets small enough to count on every page."""

    def paginate_queryset(self, queryset, request, view=None):
        self.count = queryset.count() if "offset" not in request.query_params else 0
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data):
        response = super().get_paginated_response(data)
        return Response({"count": self.count, **response.data})

    def get_paginated_response_schema(self, schema):
        paged = super().get_paginated_response_schema(schema)
        paged["properties"] = {"count": {"type": "integer", "example": 123}, **paged["properties"]}
        paged["required"] = ["count", *paged.get("required", [])]
        return paged
