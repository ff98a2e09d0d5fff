"""Shared pieces of the management API: the error handler, filter backends and field types."""

import logging
from types import SimpleNamespace

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import JsonResponse
from django.views import defaults
from django_filters.rest_framework import DjangoFilterBackend, NumberFilter
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import AuthenticationFailed, ValidationError
from rest_framework.filters import OrderingFilter, SearchFilter
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from audit.trail import record_create, record_delete, record_update, snapshot
from gateway_project import auth_events

log = logging.getLogger("gateway.api")


class TrailedModelViewSet(viewsets.ModelViewSet):
    """A ModelViewSet whose every change lands in the admin-action trail, in the same transaction."""

    def perform_create(self, serializer):
        with transaction.atomic():
            super().perform_create(serializer)
            record_create(self.request.user, "api", serializer.instance)

    def perform_update(self, serializer):
        before = snapshot(serializer.instance)
        with transaction.atomic():
            super().perform_update(serializer)
            record_update(self.request.user, "api", serializer.instance, before)

    def perform_destroy(self, instance):
        before, pk = snapshot(instance), instance.pk
        with transaction.atomic():
            super().perform_destroy(instance)
            instance.pk = pk
            record_delete(self.request.user, "api", instance, before)


def as_it_would_be_saved(model, instance, attrs: dict):
    """An unsaved copy of ``instance`` (or a new ``model``) with ``attrs`` applied: for the model's own checks
    (``clean``, constraints) in a serializer's ``validate``, without touching the stored object."""
    copy = model()
    if instance is not None:
        copy = model(**{field.attname: getattr(instance, field.attname) for field in model._meta.fields})
        copy._state.adding, copy._state.db = False, instance._state.db
    for name, value in attrs.items():
        setattr(copy, name, value)
    return copy


# The settings' default backends plus ?search=, for viewsets that declare search_fields.
SEARCHABLE_FILTER_BACKENDS = [DjangoFilterBackend, SearchFilter, OrderingFilter]


@extend_schema_field(OpenApiTypes.INT64)
class IdFilter(NumberFilter):
    """An id in the query: a whole number within a bigint, else a 400 naming the filter (SQLite overflowed: 500)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        super().__init__(*args, min_value=-(2**63), max_value=2**63 - 1, **kwargs)


class AcceptOnlyNegotiation(DefaultContentNegotiation):
    """Content negotiation by the Accept header alone, for a view whose ``?format=`` is a filter of its own.

    DRF otherwise reads ``?format=csv`` as the renderer to answer with, finds none and answers 404.
    """

    settings = SimpleNamespace(URL_FORMAT_OVERRIDE=None)


def exception_handler(exc, context):
    """DRF's handler, made uniform: every error body is a JSON object with a ``detail``.

    Validation errors keep their field errors at the top level (DRF's usual shape)
    and gain a ``detail`` summarising the first one. Model validation that escapes
    a serializer becomes a 400, and anything unexpected a JSON 500.
    """
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, AuthenticationFailed):  # credentials were given and refused (not: none were given)
        auth_events.record_token_failure(context.get("request"), str(exc.detail))
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("Unhandled error in %s", context.get("view").__class__.__name__)
        set_rollback()
        return Response({"detail": "Internal server error."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    if isinstance(response.data, list):
        response.data = {"detail": _first_message(response.data)}
    elif isinstance(response.data, dict) and "detail" not in response.data:
        response.data = {"detail": _first_message(response.data), **response.data}
    response.data = _encodable(response.data)
    return response


def _encodable(data):
    """``data`` with every string UTF-8 can encode: an error that quotes the input (an invalid choice) may quote a
    lone surrogate, which the JSON renderer could not write (a 500)."""
    if isinstance(data, dict):
        return {_encodable(key): _encodable(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_encodable(item) for item in data]
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return data.encode("utf-8", "backslashreplace").decode("utf-8")
    return data


def not_found(request, exception):
    """Django's 404 page, but the API's JSON error under /api/: a path that matches no route (an id with a dot)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def _first_message(errors, field: str = "") -> str:
    """Return the first error in a DRF error structure, prefixed with its field."""
    if isinstance(errors, dict):
        for name, value in errors.items():
            label = "" if name == "non_field_errors" else str(name)
            return _first_message(value, f"{field}.{label}" if field and label else field or label)
    elif isinstance(errors, list) and errors:
        return _first_message(errors[0], field)
    elif errors:
        return f"{field}: {errors}" if field else str(errors)
    return "Invalid input."


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class SlugRelatedField(serializers.SlugRelatedField):
    """DRF's, refusing what no slug can be before the look-up: not text, or text with NUL (PostgreSQL refuses it)."""

    def to_internal_value(self, data):
        if not isinstance(data, str) or "\x00" in data:
            self.fail("invalid")
        return super().to_internal_value(data)


class NameListField(serializers.ListField):
    """A JSON list of non-empty strings (surrounding whitespace is trimmed)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("child", StrictCharField(allow_blank=False, max_length=200))
        super().__init__(**kwargs)
