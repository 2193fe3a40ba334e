"""Session ids: random version-4 UUIDs in hex, repeated neither by the host's seeding nor a fork."""

from __future__ import annotations

import os
import random
import uuid

import agent_trace


def test_session_ids_are_version_4_uuids_in_hex() -> None:
    ids = [agent_trace.session("review").session_id for _ in range(50)]

    assert len(set(ids)) == 50
    for session_id in ids:
        parsed = uuid.UUID(hex=session_id)
        assert parsed.hex == session_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_a_host_seeding_random_still_gets_distinct_session_ids() -> None:
    ids = []
    for _ in range(3):
        random.seed(0)
        ids.append(agent_trace.session("episode").session_id)

    assert len(set(ids)) == 3


def test_a_forked_child_draws_other_session_ids_than_its_parent() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write_end, agent_trace.session("child").session_id.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    parent_id = agent_trace.session("parent").session_id
    with os.fdopen(read_end, "rb") as pipe:
        child_id = pipe.read().decode()
    os.waitpid(pid, 0)

    assert len(child_id) == 32
    assert child_id != parent_id
