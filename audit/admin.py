from django.contrib import admin

from audit.models import AdminAction, AuditRecord


class AppendOnlyAdmin(admin.ModelAdmin):
    """Read-only: nobody adds, edits or deletes an append-only log in Django admin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditRecord)
class AuditRecordAdmin(AppendOnlyAdmin):
    """Read-only: the audit log is append-only."""

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
class AdminActionAdmin(AppendOnlyAdmin):
    """Read-only: the admin-action trail is append-only."""

    list_display = ("created_at", "actor", "via", "action", "object_type", "object_repr")
    list_filter = ("action", "object_type", "via")
    search_fields = ("actor", "object_repr", "object_id")
    date_hierarchy = "created_at"
