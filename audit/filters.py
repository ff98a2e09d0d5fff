"""Filters of the request log, shared by the console and the API."""

from django import forms
from django.db.models import Q

from audit.models import AuditRecord

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
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
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
