"""Ids the hot path makes per request (request ids, target lease names): unique, cheap, and no secret.

``uuid4().hex`` and ``os.urandom`` each make a ``getrandom`` system call, which a
profile under load put at about 10 µs a request id and as much a lease name. These
come from a generator of this module's own, seeded from the system once per process
(and again in a forked child, which would otherwise repeat its parent's ids); not
Python's shared one, which tests and libraries may seed to a fixed value. Never use
them where guessing one would matter: job ids, keys and tokens come from ``secrets``
or ``uuid4``.
"""

from __future__ import annotations

import os
import random

_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def new_id() -> str:
    """32 hex digits, as ``uuid.uuid4().hex`` reads."""
    return f"{_random.getrandbits(128):032x}"
