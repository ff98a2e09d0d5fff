"""Console pages for clients and their keys: thin views over ``keys.services``."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View

from audit.models import AuditRecord
from audit.trail import record_create, record_update, snapshot
from billing.usage import daily_spend, monthly_usage, usage_by_key
from gateway_project import roles
from gateway_project.console import RoleRequiredMixin, TrailedEditView, agent_choices, sorted_page
from keys.forms import ApiKeyForm, ClientForm, RotateForm
from keys.models import ApiKey, Client
from keys.services import issue_key, revoke_key, rotate_key

RAW_KEY_SESSION = "issued_raw_key"


class ClientListView(RoleRequiredMixin, View):
    def get(self, request):
        clients = Client.objects.annotate(
            live_keys=Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True, api_keys__is_active=True))
        )
        if request.GET.get("q"):
            clients = clients.filter(Q(name__icontains=request.GET["q"]) | Q(slug__icontains=request.GET["q"]))
        page, sort = sorted_page(
            request, clients, {"name": "name", "slug": "slug", "created": "created_at", "keys": "live_keys"}, "name"
        )
        return render(request, "keys/client_list.html", {"page": page, "sort": sort})


class ClientEditView(TrailedEditView):
    model = Client
    form_class = ClientForm
    template_name = "keys/client_form.html"
    context_name = "client"

    def saved_message(self, obj):
        return f"Client “{obj.name}” saved."

    def success_url(self, obj):
        return reverse("console:client", kwargs={"pk": obj.pk})


class ClientDetailView(RoleRequiredMixin, View):
    def get(self, request, pk):
        client = get_object_or_404(Client, pk=pk)
        per_key = usage_by_key(client.pk)
        keys = list(client.api_keys.all())
        for key in keys:
            key.month_usage = per_key.get(key.pk, {"requests": 0, "tokens": 0, "cost_usd": "0.000000"})
        context = {
            "client": client,
            "keys": keys,
            "usage": monthly_usage(client.pk),
            "spend_trend": daily_spend(client.pk),
            "recent": AuditRecord.objects.filter(client_id=client.pk).order_by("-created_at", "-id")[:20],
        }
        return render(request, "keys/client_detail.html", context)


class KeyCreateView(RoleRequiredMixin, View):
    needed_roles = roles.MANAGE

    def get(self, request, pk):
        client = get_object_or_404(Client, pk=pk)
        form = ApiKeyForm(agent_choices=agent_choices(), initial={"all_agents": True})
        return render(request, "keys/key_form.html", {"form": form, "client": client})

    def post(self, request, pk):
        client = get_object_or_404(Client, pk=pk)
        form = ApiKeyForm(request.POST, agent_choices=agent_choices())
        if not form.is_valid():
            return render(request, "keys/key_form.html", {"form": form, "client": client}, status=400)
        fields = {k: v for k, v in form.cleaned_data.items() if k in ApiKeyForm.Meta.fields}
        with transaction.atomic():
            key, raw = issue_key(client, **fields, **form.scope_fields())
            record_create(request.user, "console", key)
        return _show_once(request, key, raw)


def _show_once(request, key: ApiKey, raw: str):
    """Keep the raw key in the session just long enough for one page view."""
    request.session[RAW_KEY_SESSION] = {"key_id": key.pk, "raw": raw}
    return redirect("console:key-issued", pk=key.pk)


class KeyIssuedView(RoleRequiredMixin, View):
    """Shows the raw key exactly once: the session copy is deleted as the page renders."""

    needed_roles = roles.MANAGE

    def get(self, request, pk):
        key = get_object_or_404(ApiKey.objects.select_related("client"), pk=pk)
        issued = request.session.pop(RAW_KEY_SESSION, None)
        raw = issued["raw"] if issued and issued.get("key_id") == key.pk else None
        response = render(request, "keys/key_issued.html", {"key": key, "raw": raw})
        response["Cache-Control"] = "no-store"
        return response


class KeyRevokeView(RoleRequiredMixin, View):
    needed_roles = roles.MANAGE

    def post(self, request, pk):
        key = get_object_or_404(ApiKey, pk=pk)
        before = snapshot(key)
        with transaction.atomic():
            revoke_key(key)
            record_update(request.user, "console", key, before, action="revoke")
        messages.success(request, f"Key {key.prefix}… revoked. Gateways refuse it within a second.")
        return redirect("console:client", pk=key.client_id)


class KeyRotateView(RoleRequiredMixin, View):
    needed_roles = roles.MANAGE

    def get(self, request, pk):
        key = get_object_or_404(ApiKey.objects.select_related("client"), pk=pk)
        return render(request, "keys/key_rotate.html", {"key": key, "form": RotateForm()})

    def post(self, request, pk):
        key = get_object_or_404(ApiKey.objects.select_related("client"), pk=pk)
        form = RotateForm(request.POST)
        if not form.is_valid():
            return render(request, "keys/key_rotate.html", {"key": key, "form": form}, status=400)
        before = snapshot(key)
        with transaction.atomic():
            successor, raw = rotate_key(key, form.grace)
            record_update(request.user, "console", key, before, action="rotate")
            record_create(request.user, "console", successor)
        messages.success(request, f"Key {key.prefix}… keeps working until {key.expires_at:%Y-%m-%d %H:%M} UTC.")
        return _show_once(request, successor, raw)
