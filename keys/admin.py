from django.contrib import admin

from keys.models import ApiKey, Client


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ("name", "prefix", "allowed_agents", "requests_per_minute", "tokens_per_minute", "is_active", "revoked_at")
    readonly_fields = ("prefix",)
    show_change_link = True


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "contact", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "slug", "contact")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [ApiKeyInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "client", "name", "requests_per_minute", "tokens_per_minute", "status", "last_used_at")
    list_filter = ("is_active", "client")
    search_fields = ("prefix", "name", "client__name", "client__slug")
    readonly_fields = ("prefix", "last_used_at", "created_at")
    list_select_related = ("client",)
