from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit"

    def ready(self):
        from audit.live import publish_batch
        from gateway_project.writer import writer

        writer.add_hook(publish_batch)
