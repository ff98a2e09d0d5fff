"""What a usage report is asked for (range, grouping, filters): one form for the console page and the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from billing.reports import DIMENSIONS, GROUPS, check_group_by
from keys.models import ApiKey, Client, CostCenter

DEFAULT_DAYS = 30
MAX_REPORT_DAYS = 1096  # three years: enough for year-on-year, small enough for a daily chart
ISO_DATE = ["%Y-%m-%d"]  # 2/12/2026 means two different days on two sides of the Atlantic
DATE_INPUT = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")


@dataclass(frozen=True)
class ReportQuery:
    since: date
    until: date
    group_by: list[str] = field(default_factory=list)
    filters: dict = field(default_factory=dict)  # dimension -> id (client, cost_center, key) or name (agent, model)

    @property
    def span(self) -> dict:
        """The range and filters, as the report functions take them."""
        return {"since": self.since, "until": self.until, "filters": self.filters}


class GroupByField(forms.MultipleChoiceField):
    """Groups given as repeated values (checkboxes) or as one comma-separated list (``group_by=day,client``)."""

    def __init__(self, **kwargs):
        super().__init__(choices=[(name, name.replace("_", " ")) for name in GROUPS], **kwargs)

    def to_python(self, value):
        return [part.strip() for item in super().to_python(value) for part in item.split(",") if part.strip()]

    def validate(self, value):
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")
        try:
            check_group_by(value)
        except ValueError as error:
            raise ValidationError(str(error), code="invalid_choice") from None

    def clean(self, value):
        return check_group_by(super().clean(value))  # in order, without repeats


def _id_of(model, value: str, field_name: str, noun: str) -> int | None:
    """The id of the ``model`` row whose ``field_name`` is ``value``, or ``value`` itself if it is a number.

    A number is taken as an id even when its row is gone: usage outlives deleted clients and keys.
    """
    if not value:
        return None
    found = model.objects.filter(**{field_name: value}).values_list("pk", flat=True).first()
    if found is not None:
        return found
    if value.isdigit():
        return int(value)
    raise ValidationError(f"There is no {noun} “{value}”.", code="unknown")


class ReportFilterForm(forms.Form):
    """A range of local days and what to count in it."""

    since = forms.DateField(required=False, input_formats=ISO_DATE, widget=DATE_INPUT, help_text="First day.")
    until = forms.DateField(required=False, input_formats=ISO_DATE, widget=DATE_INPUT, help_text="Last day.")
    client = forms.CharField(required=False, max_length=100, help_text="Client slug or id.")
    cost_center = forms.CharField(required=False, max_length=100, help_text="Cost center slug or id.")
    key = forms.CharField(required=False, max_length=100, label="Key", help_text="Key prefix or id.")
    agent = forms.CharField(required=False, max_length=100)
    model = forms.CharField(required=False, max_length=200)

    def clean_client(self):
        return _id_of(Client, self.cleaned_data["client"].strip(), "slug", "client")

    def clean_cost_center(self):
        return _id_of(CostCenter, self.cleaned_data["cost_center"].strip(), "slug", "cost center")

    def clean_key(self):
        return _id_of(ApiKey, self.cleaned_data["key"].strip(), "prefix", "key with the prefix")

    def clean(self):
        data = super().clean()
        if "since" in self.errors or "until" in self.errors:
            return data
        until = data.get("until") or timezone.localdate()
        since = data.get("since") or until - timedelta(days=DEFAULT_DAYS - 1)
        if since > until:
            self.add_error("since", "since must not be after until.")
        elif (until - since).days >= MAX_REPORT_DAYS:
            self.add_error("since", f"A report covers at most {MAX_REPORT_DAYS} days.")
        data["since"], data["until"] = since, until
        return data

    def query(self) -> ReportQuery:
        """The report asked for (call after ``is_valid()``)."""
        data = self.cleaned_data
        filters = {name: data[name] for name in DIMENSIONS if data.get(name) not in (None, "")}
        return ReportQuery(data["since"], data["until"], data.get("group_by", []), filters)

    def messages_by_field(self) -> dict[str, list[str]]:
        """The errors as plain messages per field, for a JSON answer."""
        return {name: [e["message"] for e in errors] for name, errors in self.errors.get_json_data().items()}


class UsageReportForm(ReportFilterForm):
    group_by = GroupByField(
        required=False, help_text="Any of day|week|month and client, cost_center, key, agent, model."
    )


class TopSpendersForm(ReportFilterForm):
    by = forms.ChoiceField(choices=[(name, name) for name in DIMENSIONS], required=False)
    limit = forms.IntegerField(required=False, min_value=1, max_value=100)

    def clean_by(self):
        return self.cleaned_data["by"] or "client"

    def clean_limit(self):
        return self.cleaned_data["limit"] or 10


CHART_BY = [("client", "Client"), ("agent", "Agent"), ("model", "Model"), ("cost_center", "Cost center")]


class ReportPageForm(UsageReportForm):
    """The console's Reports filters: choices to pick from, and what the chart splits spend by."""

    chart_by = forms.ChoiceField(choices=CHART_BY, required=False, label="Chart by")

    def __init__(self, *args, agents: list[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["group_by"].widget = forms.CheckboxSelectMultiple(choices=self.fields["group_by"].choices)
        self.fields["client"].widget = forms.Select(
            choices=[("", "All clients"), *Client.objects.order_by("name").values_list("slug", "name")]
        )
        self.fields["cost_center"].widget = forms.Select(
            choices=[("", "All cost centers"), *CostCenter.objects.order_by("name").values_list("slug", "name")]
        )
        self.fields["agent"].widget = forms.Select(choices=[("", "All agents"), *((a, a) for a in agents)])
        self.fields["key"].label = "Key prefix"
        for name in ("since", "until", "client", "cost_center", "key", "agent", "model", "group_by"):
            self.fields[name].help_text = ""

    def clean_chart_by(self):
        return self.cleaned_data["chart_by"] or "client"

    def clean(self):
        data = super().clean()
        if not self.errors:  # show the range in effect, defaults included
            self.data = self.data.copy()
            self.data["since"], self.data["until"] = data["since"].isoformat(), data["until"].isoformat()
        return data
