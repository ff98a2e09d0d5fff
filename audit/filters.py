"""Filters of the request log, shared by the console and the API."""

from django import forms
from django.db.models import Q

from audit.models import AuditRecord


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
        if data.get("since"):
            queryset = queryset.filter(created_at__gte=data["since"])
        if data.get("until"):
            queryset = queryset.filter(created_at__lt=data["until"])
        if data.get("client"):
            queryset = queryset.filter(client_slug=data["client"])
        if data.get("key_prefix"):
            queryset = queryset.filter(key_prefix__startswith=data["key_prefix"])
        if data.get("agent"):
            queryset = queryset.filter(agent=data["agent"])
        if data.get("status"):
            queryset = queryset.filter(status=data["status"])
        if data.get("request_id"):
            queryset = queryset.filter(request_id=data["request_id"])
        if data.get("text"):
            text = data["text"]
            queryset = queryset.filter(Q(input_preview__icontains=text) | Q(output_preview__icontains=text))
        return queryset
