"""Serve the gateway, console and API with Daphne, on as many worker processes as asked."""

import os

from django.conf import settings
from django.core.management.base import BaseCommand

from gateway_project.server import serve


class Command(BaseCommand):
    help = "Run the gateway with N worker processes (Daphne by default) on one port."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8000")))
        parser.add_argument(
            "--workers",
            type=int,
            default=int(os.environ.get("GATEWAY_WORKERS", "1")),
            help="Daphne processes (one per core in production; 1 in the embedded profile).",
        )
        parser.add_argument(
            "--access-log",
            action="store_true",
            default=settings.SERVER_ACCESS_LOG,
            help="The server's own line for every request too, console and API included (GATEWAY_SERVER_ACCESS_LOG).",
        )
        parser.add_argument(
            "--server",
            choices=["daphne", "uvicorn"],
            default=os.environ.get("GATEWAY_SERVER", "daphne"),
            help="ASGI server of the workers: daphne (default) or uvicorn (uvloop + httptools).",
        )

    def handle(self, *args, **opts):
        if opts["access_log"]:
            os.environ["GATEWAY_SERVER_ACCESS_LOG"] = "1"  # the workers' logging lets the lines through
        if opts["server"] == "uvicorn":
            extra = ["--log-level", "warning"] + ([] if opts["access_log"] else ["--no-access-log"])
        else:
            extra = ["--access-log", "-"] if opts["access_log"] else ["-v", "0"]
        serve(opts["host"], opts["port"], opts["workers"], "gateway_project.asgi:application", opts["server"], extra)
