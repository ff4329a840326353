"""Replaying a model's audit chain into "what held each stage and alias at that moment".

The entries are written by hand in the shape the unit of work stores (the canonical dict plus the
row's ``id`` and ``hash``), one builder method per kind of change, so each test reads as the story
it replays.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from registry.services.history import ModelHistory, replay

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=1)


class Chain:
    """Audit entries of one model's chain, in chain order, one second apart."""

    def __init__(self, model: str = "fraud", chain: str = "model:1") -> None:
        self.model, self.chain = model, chain
        self.entries: list[dict[str, Any]] = []

    def _add(self, action: str, version: int | None = None, before: dict[str, Any] | None = None,
             after: dict[str, Any] | None = None) -> Chain:
        seq = len(self.entries) + 1
        at = T0 + timedelta(seconds=seq)
        self.entries.append({
            "id": 100 + seq, "seq": seq, "chain": self.chain,
            "at": at.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "actor": "ci", "request_id": f"req-{seq}", "action": action, "model": self.model,
            "version": version, "before": before, "after": after,
            "prev_hash": f"{seq - 1:064x}", "hash": f"{seq:064x}",
        })
        return self

    def created(self) -> Chain:
        return self._add("model.created", after={"name": self.model, "description": "", "tags": {}})

    def updated(self) -> Chain:
        return self._add("model.updated", before={"name": self.model, "description": "", "tags": {}},
                         after={"name": self.model, "description": "new", "tags": {"team": "risk"}})

    def version(self, v: int) -> Chain:
        return self._add("model_version.created", v, after={
            "stage": "none", "source": "s3://bucket/model", "run_id": None, "description": "",
            "tags": {}, "metrics": {}, "inputs": []})

    def version_updated(self, v: int) -> Chain:
        return self._add("model_version.updated", v, before={"metrics": {}}, after={"metrics": {"auc": 0.9}})

    def moved(self, v: int, from_stage: str, to_stage: str, trigger: str, comment: str | None = None) -> Chain:
        return self._add("model_version.stage_changed", v, before={"stage": from_stage},
                         after={"stage": to_stage, "trigger": trigger, "comment": comment})

    def submit(self, v: int) -> Chain:
        return self.moved(v, "none", "staging", "submit")

    def withdraw(self, v: int) -> Chain:
        return self.moved(v, "staging", "none", "withdraw")

    def restore(self, v: int) -> Chain:
        return self.moved(v, "archived", "staging", "restore")

    def archive(self, v: int, from_stage: str) -> Chain:
        return self.moved(v, from_stage, "archived", "archive")

    def promote(self, v: int, incumbent: int | None = None) -> Chain:
        """As the service writes it: the incumbent archived first, in the same step."""
        if incumbent is not None:
            self.moved(incumbent, "production", "archived", "archive")
        return self.moved(v, "staging", "production", "promote")

    def rollback(self, v: int, incumbent: int | None, comment: str = "bad release") -> Chain:
        if incumbent is not None:
            self.moved(incumbent, "production", "archived", "archive", comment)
        return self.moved(v, "archived", "production", "rollback", comment)

    def alias(self, alias: str, v: int, previous: int | None = None, protected: bool = False) -> Chain:
        before = None if previous is None else {"alias": alias, "version": previous, "protected": protected}
        return self._add("model_version.alias_set", v, before=before,
                         after={"alias": alias, "version": v, "protected": protected})

    def unalias(self, alias: str, v: int) -> Chain:
        return self._add("model_version.alias_deleted", v,
                         before={"alias": alias, "version": v, "protected": False}, after=None)

    def deleted(self) -> Chain:
        return self._add("model.deleted", before={"name": self.model, "description": "", "tags": {}})


def state(h: ModelHistory) -> tuple[int | None, list[int], dict[str, int]]:
    return h.production, h.staging, h.aliases


EMPTY: tuple[int | None, list[int], dict[str, int]] = (None, [], {})


# -- the answer's shape -----------------------------------------------------------------------------


def test_the_answer_has_the_moment_and_the_three_parts() -> None:
    h = replay(Chain().created().version(1).version(2).submit(2).promote(2).submit(1).alias("a", 1).entries,
               LATER)
    assert isinstance(h, ModelHistory)
    assert [f.name for f in dataclasses.fields(h)] == ["at", "production", "staging", "aliases"]
    assert h.at is LATER
    assert h == ModelHistory(LATER, 2, [1], {"a": 1})
    assert type(h.production) is int and type(h.staging) is list and type(h.aliases) is dict


def test_nothing_replayed_is_an_empty_answer() -> None:
    assert replay([], T0) == ModelHistory(T0, None, [], {})


def test_the_answer_is_the_callers_own() -> None:
    entries = Chain().created().version(1).submit(1).alias("a", 1).entries
    first = replay(entries, LATER)
    first.staging.append(99)
    first.aliases["b"] = 99
    assert state(replay(entries, LATER)) == (None, [1], {"a": 1})


def test_staging_is_sorted_and_aliases_are_ordered_by_name() -> None:
    chain = Chain().created().version(1).version(2).version(3).submit(3).submit(1).submit(2)
    chain.alias("zeta", 1).alias("alpha", 3).alias("mid", 2)
    h = replay(chain.entries, LATER)
    assert h.staging == [1, 2, 3]
    assert list(h.aliases) == ["alpha", "mid", "zeta"]


# -- versions and stages ----------------------------------------------------------------------------


def test_a_created_model_holds_nothing() -> None:
    assert state(replay(Chain().created().entries, LATER)) == EMPTY


def test_registered_versions_are_in_no_stage_shown() -> None:
    assert state(replay(Chain().created().version(1).version(2).version(3).entries, LATER)) == EMPTY


def test_submitted_versions_are_staging() -> None:
    h = replay(Chain().created().version(1).version(2).submit(1).submit(2).entries, LATER)
    assert state(h) == (None, [1, 2], {})


def test_promotion_moves_the_version_out_of_staging_into_production() -> None:
    h = replay(Chain().created().version(1).version(2).submit(1).submit(2).promote(1).entries, LATER)
    assert state(h) == (1, [2], {})


def test_promotion_archives_the_incumbent_in_the_same_step() -> None:
    chain = Chain().created().version(1).version(2).submit(1).promote(1).submit(2).promote(2, incumbent=1)
    assert state(replay(chain.entries, LATER)) == (2, [], {})


def test_a_rollback_restores_the_previous_production_version() -> None:
    chain = (Chain().created().version(1).version(2).submit(1).promote(1).submit(2).promote(2, incumbent=1)
             .rollback(1, incumbent=2))
    assert state(replay(chain.entries, LATER)) == (1, [], {})


def test_archiving_production_leaves_it_empty() -> None:
    chain = Chain().created().version(1).submit(1).promote(1).archive(1, "production")
    assert state(replay(chain.entries, LATER)) == EMPTY


def test_withdraw_and_restore() -> None:
    chain = Chain().created().version(1).version(2).submit(1).submit(2).withdraw(1).archive(2, "staging")
    assert state(replay(chain.entries, LATER)) == EMPTY
    chain.restore(2)
    assert state(replay(chain.entries, LATER)) == (None, [2], {})


def test_updates_to_fields_change_no_stage_or_alias() -> None:
    chain = Chain().created().version(1).submit(1).alias("a", 1)
    before = state(replay(chain.entries, LATER))
    chain.updated().version_updated(1)
    assert state(replay(chain.entries, LATER)) == before == (None, [1], {"a": 1})


# -- aliases ----------------------------------------------------------------------------------------


def test_an_alias_set_moved_and_deleted() -> None:
    chain = Chain().created().version(1).version(2).alias("champion", 1)
    assert replay(chain.entries, LATER).aliases == {"champion": 1}
    chain.alias("champion", 2, previous=1)
    assert replay(chain.entries, LATER).aliases == {"champion": 2}
    chain.alias("challenger", 1)
    assert replay(chain.entries, LATER).aliases == {"champion": 2, "challenger": 1}
    chain.unalias("champion", 2)
    assert replay(chain.entries, LATER).aliases == {"challenger": 1}
    chain.unalias("challenger", 1)
    assert replay(chain.entries, LATER).aliases == {}


def test_aliases_are_independent_of_stages() -> None:
    chain = (Chain().created().version(1).version(2).alias("champion", 1).submit(1).promote(1)
             .submit(2).promote(2, incumbent=1))
    assert state(replay(chain.entries, LATER)) == (2, [], {"champion": 1})


def test_a_protected_alias_counts_like_any_other() -> None:
    chain = Chain().created().version(1).alias("prod", 1, protected=True)
    assert replay(chain.entries, LATER).aliases == {"prod": 1}


def test_an_alias_set_again_after_deletion_points_at_its_new_version() -> None:
    chain = Chain().created().version(1).version(2).alias("a", 1).unalias("a", 1).alias("a", 2)
    assert replay(chain.entries, LATER).aliases == {"a": 2}


# -- deletion ---------------------------------------------------------------------------------------


def test_deleting_the_model_clears_everything() -> None:
    chain = (Chain().created().version(1).version(2).version(3).submit(1).promote(1).submit(2)
             .alias("champion", 1).alias("challenger", 2).archive(1, "production").deleted())
    assert state(replay(chain.entries, LATER)) == EMPTY


def test_the_state_just_before_deletion_is_intact() -> None:
    chain = (Chain().created().version(1).version(2).submit(1).promote(1).submit(2).alias("champion", 1)
             .archive(1, "production"))
    assert state(replay(chain.entries, LATER)) == (None, [2], {"champion": 1})
    chain.deleted()
    assert state(replay(chain.entries, LATER)) == EMPTY
    assert state(replay(chain.entries[:-1], LATER)) == (None, [2], {"champion": 1})


# -- the scripted sequence, step by step ------------------------------------------------------------

# (step, expected (production, staging, aliases) after it), replayed from the prefix of the chain.
SCRIPT: list[tuple[str, tuple[int | None, list[int], dict[str, int]]]] = [
    ("created", EMPTY),
    ("v1", EMPTY),
    ("v2", EMPTY),
    ("v3", EMPTY),
    ("submit v1", (None, [1], {})),
    ("promote v1", (1, [], {})),
    ("champion -> 1", (1, [], {"champion": 1})),
    ("submit v2", (1, [2], {"champion": 1})),
    ("promote v2", (2, [], {"champion": 1})),
    ("champion -> 2", (2, [], {"champion": 2})),
    ("submit v3", (2, [3], {"champion": 2})),
    ("challenger -> 3", (2, [3], {"champion": 2, "challenger": 3})),
    ("rollback to v1", (1, [3], {"champion": 2, "challenger": 3})),
    ("delete challenger", (1, [3], {"champion": 2})),
]


def scripted() -> list[list[dict[str, Any]]]:
    """The chain, cut after each step (a promotion with an incumbent is two entries, one step)."""
    chain, cuts = Chain(), []
    steps = [
        lambda: chain.created(), lambda: chain.version(1), lambda: chain.version(2), lambda: chain.version(3),
        lambda: chain.submit(1), lambda: chain.promote(1), lambda: chain.alias("champion", 1),
        lambda: chain.submit(2), lambda: chain.promote(2, incumbent=1),
        lambda: chain.alias("champion", 2, previous=1), lambda: chain.submit(3),
        lambda: chain.alias("challenger", 3), lambda: chain.rollback(1, incumbent=2),
        lambda: chain.unalias("challenger", 3),
    ]
    for step in steps:
        step()
        cuts.append(list(chain.entries))
    return cuts


@pytest.mark.parametrize(("index", "step", "expected"), [(i, s, e) for i, (s, e) in enumerate(SCRIPT)],
                         ids=[s for s, _ in SCRIPT])
def test_each_prefix_of_the_scripted_chain(index: int, step: str,
                                           expected: tuple[int | None, list[int], dict[str, int]]) -> None:
    assert state(replay(scripted()[index], LATER)) == expected


def test_replay_takes_what_it_is_given() -> None:
    """Leaving out entries after ``at`` is the caller's job (model_history asks the repository
    for entries until ``at``): replay applies every entry it is handed and only echoes ``at``."""
    entries = scripted()[-1]
    early = T0 - timedelta(days=1)
    assert replay(entries, early) == ModelHistory(early, 1, [3], {"champion": 2})
    assert replay(entries[:5], LATER) == ModelHistory(LATER, None, [1], {})
