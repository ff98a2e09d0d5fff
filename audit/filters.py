"""Filters of the request log and the admin-action trail, shared by the console and the API."""

from django import forms
from django.db.models import Q

from audit.models import AdminAction, AuditRecord
from gateway_project import datetimes

# Form field -> queryset lookup; "text" searches both previews and is applied apart.
LOOKUPS = {
    "since": "created_at__gte",
    "until": "created_at__lt",
    "client": "client_slug",
    "key_prefix": "key_prefix__startswith",
    "agent": "agent",
    "status": "status",
    "request_id": "request_id",
}


class AuditFilterForm(forms.Form):
    since = datetimes.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = datetimes.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    client = forms.CharField(required=False, label="Client slug")
    key_prefix = forms.CharField(required=False, label="Key prefix")
    agent = forms.CharField(required=False)
    status = forms.IntegerField(required=False, min_value=100, max_value=599)
    text = forms.CharField(required=False, label="Text in previews")
    request_id = forms.CharField(required=False, label="Request id")

    def filter(self, queryset=None):
        """The records matching the valid fields (invalid ones are reported by the form)."""
        queryset = AuditRecord.objects.all() if queryset is None else queryset
        data = self.cleaned_data if self.is_valid() else {}
        lookups = {name: value for name, value in data.items() if value not in (None, "") and name in LOOKUPS}
        queryset = queryset.filter(**{LOOKUPS[name]: value for name, value in lookups.items()})
        if data.get("text"):
            text = data["text"]
            queryset = queryset.filter(Q(input_preview__icontains=text) | Q(output_preview__icontains=text))
        return queryset


class TrailFilterForm(forms.Form):
    """Filters of the admin-action trail: who, what, on which kind of object, when."""

    since = datetimes.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = datetimes.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    actor = forms.CharField(required=False)
    action = forms.CharField(required=False)
    object_type = forms.CharField(required=False, label="Object type")

    LOOKUPS = {"since": "created_at__gte", "until": "created_at__lt", "actor": "actor", "action": "action",
               "object_type": "object_type"}  # fmt: skip

    def filter(self, queryset=None):
        """The actions matching the valid fields (invalid ones are reported by the form)."""
        queryset = AdminAction.objects.all() if queryset is None else queryset
        data = self.cleaned_data if self.is_valid() else {}
        return queryset.filter(**{self.LOOKUPS[name]: value for name, value in data.items() if value not in (None, "")})
