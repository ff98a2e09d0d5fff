from django.apps import AppConfig


class GatewayProjectConfig(AppConfig):
    """The project's own app: settings-level pieces, the console shell and its sign-in events."""

    name = "gateway_project"

    def ready(self):
        from gateway_project import (
            auth_events,  # noqa: F401  (connects the auth signals' receivers)
            metrics_scrape,  # noqa: F401  (counts Celery tasks' outcomes)
        )
