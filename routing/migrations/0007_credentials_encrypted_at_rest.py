"""Upstream credentials encrypted at rest; targets get credentials of their own; jobs get their webhook secret.

Existing agents' plaintext credentials are encrypted with the newest key of
GATEWAY_CREDENTIAL_KEYS. A target is now sent the agent's credential only on the agent's
own scheme, host and port, so every existing target elsewhere is given a copy of its
agent's credential: what each target was sent before, it is still sent. The columns stay
text throughout (plain while the values are converted, then read through the field that
decrypts them).
"""

import django.core.validators
from django.db import migrations, models

import gateway_project.credentials
from gateway_project.credentials import decrypt, encrypt, same_origin


def _is_token(value: str) -> bool:
    try:
        decrypt(value)
    except gateway_project.credentials.Unreadable:
        return False
    return True


def encrypt_credentials(apps, schema_editor):
    Agent = apps.get_model("routing", "Agent")
    Target = apps.get_model("routing", "Target")
    for agent in Agent.objects.exclude(upstream_api_key="").only("pk", "upstream_url", "upstream_api_key"):
        plaintext = agent.upstream_api_key
        if _is_token(plaintext):  # run before, or written by a newer gateway
            continue
        token = encrypt(plaintext)
        Agent.objects.filter(pk=agent.pk).update(upstream_api_key=token)
        for target in Target.objects.filter(agent_id=agent.pk, upstream_api_key="").only("pk", "url"):
            if not same_origin(target.url, agent.upstream_url):
                Target.objects.filter(pk=target.pk).update(upstream_api_key=encrypt(plaintext))


def decrypt_credentials(apps, schema_editor):
    Agent = apps.get_model("routing", "Agent")
    for agent in Agent.objects.exclude(upstream_api_key="").only("pk", "upstream_api_key"):
        if _is_token(agent.upstream_api_key):
            Agent.objects.filter(pk=agent.pk).update(upstream_api_key=decrypt(agent.upstream_api_key))


class Migration(migrations.Migration):
    dependencies = [
        ("routing", "0006_outbound_address_policy"),
    ]

    operations = [
        # Plain text columns first (a token is longer than the 500 characters a credential may have).
        migrations.AlterField(
            model_name="agent",
            name="upstream_api_key",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="target",
            name="upstream_api_key",
            field=models.TextField(blank=True, default=""),
            preserve_default=False,
        ),
        migrations.RunPython(encrypt_credentials, decrypt_credentials, elidable=False),
        migrations.AlterField(
            model_name="agent",
            name="upstream_api_key",
            field=gateway_project.credentials.EncryptedTextField(
                blank=True,
                help_text="Credential the gateway sends upstream (never the client's key); encrypted at rest.",
                validators=[django.core.validators.MaxLengthValidator(500)],
            ),
        ),
        migrations.AlterField(
            model_name="target",
            name="upstream_api_key",
            field=gateway_project.credentials.EncryptedTextField(
                blank=True,
                help_text="Credential sent to this target; empty: the agent's, when the target is on the agent's own "
                "scheme, host and port, else none. Encrypted at rest.",
                validators=[django.core.validators.MaxLengthValidator(500)],
            ),
        ),
        migrations.AddField(
            model_name="agentjob",
            name="webhook_secret",
            field=gateway_project.credentials.EncryptedTextField(blank=True),
        ),
    ]
