from django.contrib import admin

from audit.models import AdminAction, AuditRecord


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    """The audit log is append-only; the site shows every model read-only (``gateway_project.admin_site``)."""

    list_display = (
        "created_at",
        "request_id",
        "client_slug",
        "key_prefix",
        "agent",
        "method",
        "path",
        "status",
        "latency_ms",
    )
    list_filter = ("status", "agent", "method")
    search_fields = ("request_id", "client_slug", "key_prefix", "path", "input_preview", "output_preview")
    date_hierarchy = "created_at"


@admin.register(AdminAction)
class AdminActionAdmin(admin.ModelAdmin):
    """The admin-action trail is append-only; the site shows every model read-only."""

    list_display = ("created_at", "actor", "via", "action", "object_type", "object_repr")
    list_filter = ("action", "object_type", "via")
    search_fields = ("actor", "object_repr", "object_id")
    date_hierarchy = "created_at"
