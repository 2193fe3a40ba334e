"""A coordinator that exits without calling agent_trace.shutdown(); run by test_exit.py.

Sinks come from the environment, as a deployed service would have them. One session is still
open when the interpreter exits; with `--open-turn`, so are a turn of it and a round in that turn.
"""

from __future__ import annotations

import sys

import agent_trace


def main(finished: int, open_turn: bool) -> None:
    agent_trace.configure("exit-test")
    for index in range(finished):
        with agent_trace.session("review", session_id=f"done-{index}") as s:
            with s.turn("ethics"):
                pass
            with s.consensus_round("majority", participants=["ethics", "legal"]) as rnd:
                rnd.vote("ethics", "approve")
                rnd.vote("legal", "approve")
            s.set_outcome("approved")

    # Still open at exit: a coordinator whose last session never got to finish.
    left_open = agent_trace.session("review", session_id="left-open")
    left_open.__enter__()
    with left_open.turn("legal"):
        pass
    if open_turn:
        # An agent still deliberating, with the vote it started, when the process ends.
        left_open.turn("ethics").__enter__()
        left_open.consensus_round("majority", participants=["ethics"]).__enter__()
    print(left_open.trace_id, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), "--open-turn" in sys.argv[2:])
