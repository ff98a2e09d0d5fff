from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"
    verbose_name = "Clients and API keys"

    def ready(self):
        from gateway_project.writer import writer
        from keys import signals  # noqa: F401
        from keys.services import mark_keys_used

        writer.add_hook(mark_keys_used)
