"""Drop cached key snapshots whenever a key or its client changes."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from keys.access import key_snapshots
from keys.models import ApiKey, Client


@receiver([post_save, post_delete], sender=ApiKey)
def forget_key(sender, instance, **kwargs):
    key_snapshots.forget(instance.key_hash)


@receiver([post_save, post_delete], sender=Client)
def forget_client_keys(sender, instance, **kwargs):
    for key_hash in ApiKey.objects.filter(client_id=instance.pk).values_list("key_hash", flat=True):
        key_snapshots.forget(key_hash)
