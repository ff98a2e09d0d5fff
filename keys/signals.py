"""Drop cached key snapshots whenever a key or its client changes, and announce the change to every process."""

from functools import partial

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver

from gateway_project.hotstate import get_hot_state
from keys.access import key_snapshots
from keys.models import AgentRole, ApiKey, Client, CostCenter, IdentityProvider, Plan


@receiver([post_save, post_delete], sender=ApiKey)
def forget_key(sender, instance, **kwargs):
    key_changed(instance.pk, instance.key_hash)


@receiver([post_save, post_delete], sender=Client)
def forget_client_keys(sender, instance, **kwargs):
    for key_id, key_hash in ApiKey.objects.filter(client_id=instance.pk).values_list("pk", "key_hash"):
        key_changed(key_id, key_hash)


@receiver([post_save, pre_delete], sender=CostCenter)
def forget_cost_center_keys(sender, instance, **kwargs):
    """Key snapshots carry their client's cost center's slug (``client.cost_center`` in policy rules); before a
    deletion, while the clients still name it."""
    for key_id, key_hash in ApiKey.objects.filter(client__cost_center_id=instance.pk).values_list("pk", "key_hash"):
        key_changed(key_id, key_hash)


@receiver([post_save, pre_delete], sender=Plan)
def forget_plan_keys(sender, instance, **kwargs):
    """Key snapshots carry their plan's slug (``key.plan``); before a deletion, while the keys still name it."""
    for key_id, key_hash in ApiKey.objects.filter(plan_id=instance.pk).values_list("pk", "key_hash"):
        key_changed(key_id, key_hash)


@receiver(pre_delete, sender=AgentRole)
def take_deleted_role_from_keys(sender, instance, **kwargs):
    """A deleted role leaves no key: one created later under the same slug is granted afresh, not inherited. (An
    agent that requires it stops the deletion before this runs: ``on_delete=PROTECT``.)"""
    from keys.services import role_holders

    for key in role_holders(instance):
        key.roles = [slug for slug in key.roles if slug != instance.slug]
        key.save(update_fields=["roles"])  # announced like any change to the key


def key_changed(key_id: int, key_hash: str) -> None:
    """Forget the key's snapshot now, and once the change is committed announce it (open sessions re-check it)."""
    key_snapshots.forget(key_hash)
    transaction.on_commit(partial(_announce, key_id, key_hash), robust=True)


def _announce(key_id: int, key_hash: str) -> None:
    # Forgotten again: a request between the save and the commit may have cached the row as it was.
    key_snapshots.forget(key_hash)
    get_hot_state().publish_key_change(key_id)


@receiver(post_save, sender=IdentityProvider)
def keep_identity_keys_in_step(sender, instance, **kwargs):
    """Its identity keys hold its scopes and limits: saved again with them (each save announced)."""
    from keys.identities import forget_identity_keys

    fields = instance.key_fields()
    for key in ApiKey.objects.filter(identity_provider=instance):
        if any(getattr(key, name) != value for name, value in fields.items()):
            for name, value in fields.items():
                setattr(key, name, value)
            key.save(update_fields=list(fields))
    forget_identity_keys()


@receiver(pre_delete, sender=IdentityProvider)
def revoke_identity_keys(sender, instance, **kwargs):
    """A deleted provider's identity keys are revoked (kept, for their usage and audit history)."""
    from django.utils import timezone

    from keys.identities import forget_identity_keys

    for key in ApiKey.objects.filter(identity_provider=instance, revoked_at__isnull=True):
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    forget_identity_keys()
