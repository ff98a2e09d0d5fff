from django.contrib import admin

from routing.models import Agent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "kind", "upstream_url", "timeout_seconds", "cost_center", "is_active")
    list_filter = ("kind", "is_active")
    search_fields = ("slug", "name", "cost_center")
