"""Run Daphne as a gateway worker, with its shutdown made to wait for every request still in flight.

Daphne 4.2's ``Server.kill_all_applications`` (run before the reactor stops) reads
``details["application_instance"]`` for every connection, but ``application_checker``
deletes that key once a connection's application is done. On a keep-alive connection
whose last request has finished it raises ``KeyError`` before it has cancelled, and
waited for, the applications still running, so requests already answered but still
settling their spend were cut off and lost their audit records. This version skips
finished connections instead; everything else is Daphne's own.
"""

import asyncio

from daphne import server
from daphne.cli import CommandLineInterface
from twisted.internet import defer


def kill_all_applications(self):
    """Cancel every application instance still running and make the reactor wait until they end."""
    wait_for = []
    for details in self.connections.values():
        instance = details.get("application_instance")
        if instance is not None and not instance.done():
            instance.cancel()
            wait_for.append(instance)
    server.logger.info("Killed %i pending application instances", len(wait_for))
    waited = defer.Deferred.fromFuture(asyncio.gather(*wait_for))
    waited.addErrback(lambda failure: None)
    return waited


server.Server.kill_all_applications = kill_all_applications

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
