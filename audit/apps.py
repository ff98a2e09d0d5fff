from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit"

    def ready(self):
        from audit.chain import chain_rows
        from audit.live import publish_batch
        from audit.models import AuditRecord
        from audit.quarantine import keep_refused_row
        from gateway_project.writer import writer

        writer.set_preparer(AuditRecord, chain_rows)  # every batch joins the hash chain as it is written
        writer.add_async_hook(publish_batch)  # on the loop: never blocks the writer's thread or the exit
        writer.set_quarantine(keep_refused_row)  # rows the database refuses are set aside, not retried for ever
