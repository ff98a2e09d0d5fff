from django.contrib import admin

from billing.models import Budget, ModelPrice, UsageRecord


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("model", "input_per_million", "output_per_million", "updated_at")
    search_fields = ("model",)


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("client", "limit_usd", "updated_at")
    list_select_related = ("client",)


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ("created_at", "request_id", "client", "agent", "model", "input_tokens", "output_tokens", "cost_usd")
    list_filter = ("agent", "model")
    search_fields = ("request_id",)
