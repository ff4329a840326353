"""How long the chaos run lasts and which faults it injects when: the short form (CI) and the
long form (``--long``, for the figures). Every time is seconds from the start of the load."""

from __future__ import annotations

from dataclasses import dataclass, field

# Timings of the processes under test, shortened so faults resolve within the run.
WEBHOOK_TIMEOUT = 2.0  # REGISTRY_WEBHOOK_TIMEOUT: a hanging receiver costs one attempt this long
WEBHOOK_LEASE = 4.0  # REGISTRY_WEBHOOK_LEASE: a killed worker's deliveries go out again after it
# About 30 s of retries: longer than any receiver fault below, so no delivery ends `failed`.
RETRY_SCHEDULE = "0,0.2,0.5,1,1,1,2,2,2,2,3,3,3,3,3"
CLIENT_TIMEOUT = 30.0  # a request unanswered this long is a violation (the service hangs)
# The bound a stalled database must be answered within (pool checkout 5 s, command timeout
# 10 s), plus slack for a loaded machine. Slower answers are violations.
ANSWER_BOUND = 15.0
# After a stall is released, requests already sent may still get the 503 that their timeout
# produced just before the release, and each process re-validates the pool connections that
# timed out. 2 s covers that; a 5xx to a request sent later than this is a violation.
STALL_GRACE = 2.0


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str  # kill_serve | kill_worker | stall | receiver
    duration: float = 0.0  # stall: frozen this long; receiver: the mode lasts this long
    mode: str = ""  # receiver: hang | reset | error500 | down | gone410


@dataclass(frozen=True)
class Profile:
    name: str
    duration: float  # seconds of load
    clients: int = 32
    models: int = 4
    drain_timeout: float = 45.0  # after the load, for the outbox and deliveries to settle
    faults: tuple[Fault, ...] = field(default_factory=tuple)


SHORT = Profile("short", duration=34.0, faults=(
    Fault(3.0, "receiver", 5.0, "hang"),
    Fault(5.0, "kill_worker"),
    Fault(9.0, "receiver", 3.0, "reset"),
    Fault(11.0, "kill_serve"),
    Fault(13.0, "receiver", 3.0, "error500"),
    Fault(17.0, "stall", 3.0),
    Fault(23.0, "receiver", 4.0, "down"),
    Fault(26.0, "kill_worker"),
    Fault(29.0, "receiver", 0.0, "gone410"),
))


def _long_faults() -> tuple[Fault, ...]:
    faults: list[Fault] = []
    # Every 40 s a round of every fault; the stalls grow past the 10 s command timeout.
    stalls = (3.0, 6.0, 12.0, 4.0, 15.0, 8.0)
    for i, stall in enumerate(stalls):
        t = 5.0 + 40.0 * i
        faults += [Fault(t, "receiver", 6.0, "hang"), Fault(t + 3, "kill_worker"),
                   Fault(t + 8, "receiver", 4.0, "reset"), Fault(t + 10, "kill_serve"),
                   Fault(t + 14, "receiver", 4.0, "error500"), Fault(t + 19, "stall", stall),
                   Fault(t + 19 + stall + 3, "receiver", 5.0, "down"), Fault(t + 30, "kill_worker"),
                   Fault(t + 33, "kill_serve")]
    faults.append(Fault(5.0 + 40.0 * len(stalls) - 10, "receiver", 0.0, "gone410"))
    return tuple(faults)


# On a 2-core machine the long form's backlog of deliveries takes minutes to clear after the load
# (each subscriber gets a model's events one at a time): the drain may take that long.
LONG = Profile("long", duration=5.0 + 40.0 * 6, drain_timeout=240.0, faults=_long_faults())
