"""Reload the in-memory budget table when a budget changes in this process (others reload within their refresh)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from billing.budgets import forget_budgets
from billing.models import Budget
from billing.services import carry_budgets_over, give_plan_budget
from keys.models import ApiKey


@receiver([post_save, post_delete], sender=Budget)
def forget_changed_budget(sender, instance, **kwargs):
    forget_budgets()


@receiver(post_save, sender=ApiKey)
def budget_new_keys(sender, instance, created, update_fields=None, **kwargs):
    """Plans give new keys their budget; rotation hands the key budgets to the successor."""
    if created:
        give_plan_budget(instance)
    elif update_fields and "replaced_by" in update_fields and instance.replaced_by_id:
        if not Budget.objects.filter(scope=Budget.KEY, api_key_id=instance.replaced_by_id).exists():
            carry_budgets_over(instance, instance.replaced_by)
