"""Drop cached budget snapshots whenever a budget changes."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from billing.budgets import forget_budget
from billing.models import Budget


@receiver([post_save, post_delete], sender=Budget)
def forget_changed_budget(sender, instance, **kwargs):
    forget_budget(instance.client_id)
