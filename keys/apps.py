from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"
    verbose_name = "Clients and API keys"

    def ready(self):
        from keys import signals  # noqa: F401
