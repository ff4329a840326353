"""What the pages draw, from plain data: the stays replayed from audit entries, the timeline's
rows, the lineage picture's boxes and arrows, and a policy in words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from registry.api.ui.views import lineage_picture, policy_in_words, stays, timeline
from registry.domain.gates import Policy
from registry.domain.stages import Stage

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def moved(version: int, minute: int, to_stage: str, actor: str = "ci", trigger: str = "promote") -> dict:
    return {"action": "model_version.stage_changed", "version": version, "at": at(minute), "actor": actor,
            "before": {"stage": "?"}, "after": {"stage": to_stage, "trigger": trigger}}


def test_stays_follow_versions_into_and_out_of_staging_and_production() -> None:
    entries = [
        {"action": "model_version.created", "version": 1, "at": at(0), "actor": "ci", "after": {}},
        moved(1, 1, "staging", trigger="submit"),
        moved(1, 2, "production"),
        moved(2, 3, "staging", trigger="submit"),
        moved(2, 5, "production", actor="rel"),
        moved(1, 5, "archived", actor="rel", trigger="archive"),
        {"action": "model_version.imported", "version": 7, "at": at(6), "actor": "import:mlflow",
         "after": {"stage": "staging"}},
        {"action": "model_version.deleted", "version": 7, "at": at(8), "actor": "admin", "after": None},
    ]
    found = [(s.stage, s.version, s.start, s.end, s.by) for s in stays(entries)]
    assert found == [
        ("staging", 1, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), "ci"),
        ("production", 1, T0 + timedelta(minutes=2), T0 + timedelta(minutes=5), "ci"),
        ("staging", 2, T0 + timedelta(minutes=3), T0 + timedelta(minutes=5), "ci"),
        ("production", 2, T0 + timedelta(minutes=5), None, "rel"),
        ("staging", 7, T0 + timedelta(minutes=6), T0 + timedelta(minutes=8), "import:mlflow"),
    ]


def test_overlapping_staging_stays_get_rows_of_their_own_and_production_one_row() -> None:
    entries = [moved(1, 0, "staging"), moved(2, 1, "staging"), moved(1, 2, "production"),
               moved(3, 3, "staging"), moved(2, 4, "archived")]
    chart = timeline(stays(entries), T0 + timedelta(minutes=10), width=1000)
    assert chart is not None
    assert chart.staging_lanes == 2  # 1 and 2 overlap; 3 starts after 1 left staging
    rows = {b.segment.version: b.y for b in chart.staging}
    assert rows[1] == rows[3] != rows[2]
    assert {b.y for b in chart.production} == {10}
    prod = chart.production[0]
    assert (prod.x, prod.width) == (200.0, 800.0)  # from minute 2 to now (minute 10), of 10 minutes
    assert chart.height > chart.axis_y > max(b.y for b in chart.staging)
    assert timeline([], T0) is None


def test_the_lineage_picture_links_inputs_run_version_and_stage_changes_in_order() -> None:
    picture = lineage_picture("fraud", 3, {
        "inputs": [{"namespace": "s3://d", "name": "tx"}, {"namespace": "s3://d", "name": "labels"}],
        "run": {"id": "run-9"},
        "stages": [{"to_stage": "staging", "at": at(1), "actor": "ci"},
                   {"to_stage": "production", "at": at(2), "actor": "rel"}]})
    labels = [(n.kind, n.label) for n in picture.nodes]
    assert labels == [("dataset", "tx"), ("dataset", "labels"), ("run", "run run-9"),
                      ("version", "fraud v3"), ("stage", "staging"), ("stage", "production")]
    edges = [(a.label, b.label) for a, b in picture.edges]
    assert edges == [("tx", "run run-9"), ("labels", "run run-9"), ("run run-9", "fraud v3"),
                     ("fraud v3", "staging"), ("staging", "production")]
    assert all(a.right < b.x for a, b in picture.edges)  # every arrow points right
    bare = lineage_picture("m", 1, {"inputs": [], "run": None, "stages": []})
    assert [(n.kind, n.x) for n in bare.nodes] == [("version", 10)] and bare.edges == []


def test_a_policy_in_words_names_every_rule() -> None:
    policy = Policy.parse({"metrics": {"auc": {"min": 0.9, "min_delta_vs_production": 0.0}, "latency_ms": {"max": 50}},
                           "required_checks": ["unit-tests"], "required_approvals": 2, "auto_apply": False,
                           "min_staging_seconds": 7200, "required_fields": ["description", "artifact"]},
                          Stage.PRODUCTION)
    assert policy_in_words(policy) == [
        "auc is at least 0.9",
        "auc is at least 0 above the production version's",
        "latency_ms is at most 50",
        "the version has a description, at least one file",
        "the latest report of check unit-tests is success",
        "the version has been in staging for 2 hours",
        "2 releasers other than the requester approved the request; the requester then makes the move",
    ]
    assert policy_in_words(Policy()) == []
