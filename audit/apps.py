from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit"

    def ready(self):
        from audit.chain import chain_rows
        from audit.live import publish_batch
        from audit.models import AuditRecord
        from gateway_project.writer import writer

        writer.set_preparer(AuditRecord, chain_rows)  # every batch joins the hash chain as it is written
        writer.add_async_hook(publish_batch)  # on the loop: never blocks the writer's thread or the exit
