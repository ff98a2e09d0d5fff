"""The Celery app: broker and options come from Django settings (``CELERY_*``)."""

import os

from celery import Celery
from celery.signals import setup_logging, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

app = Celery("gateway_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def log_as_the_gateway_does(**kwargs) -> None:
    """The worker's and beat's lines in the gateway's format and levels (``settings.LOGGING``: JSON when deployed,
    ``GATEWAY_LOG_LEVEL``), not Celery's own: one collector reads every process of the gateway alike."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@worker_process_shutdown.connect
def send_the_last_spans(**kwargs) -> None:
    """A pool process's queued spans (its jobs' traces) go before it exits, within ``tracing.flush``'s bound: a
    pool's processes leave without running the interpreter's exit hooks."""
    from gateway_project import tracing

    tracing.flush()
