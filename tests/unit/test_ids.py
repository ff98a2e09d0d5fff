"""Request ids and lease names: unique per process, after a fork, and whatever seeds Python's shared generator."""

from __future__ import annotations

import os
import random
import re

from gateway_project.ids import new_id


def test_an_id_reads_as_a_uuid4_hex_and_does_not_repeat():
    ids = [new_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_seeding_pythons_shared_generator_does_not_repeat_ids():
    """pytest-randomly (and any library) may seed ``random`` to a fixed value; two requests must not share an id."""
    random.seed(1234)
    first = new_id()
    random.seed(1234)
    assert new_id() != first


def test_a_forked_worker_does_not_repeat_its_parents_ids():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, "".join(new_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 96).decode()
    os.close(read)
    parent = "".join(new_id() for _ in range(3))
    assert child and child != parent
