"""The metrics' own rules: who may scrape, which label a delivery gets, what a committed unit of
work counts, how the backlog reads when the database could not be asked, and which processes'
live gauges a scrape forgets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry import metrics
from registry.domain.events import ModelCreated, RequestApproved, RequestRejected, StageChanged


def test_without_a_token_setting_any_scrape_is_answered() -> None:
    assert metrics.authorized(None, None)
    assert metrics.authorized(None, "Bearer whatever")


def test_with_a_token_setting_only_that_bearer_token_scrapes() -> None:
    assert metrics.authorized("s3cret", "Bearer s3cret")
    assert metrics.authorized("s3cret", "bearer s3cret")
    for wrong in (None, "", "s3cret", "Bearer", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret",
                  "Bearer S3CRET"):
        assert not metrics.authorized("s3cret", wrong), wrong


def test_deliveries_are_labelled_by_sink_never_by_subscription() -> None:
    assert metrics.sink_of("webhook:17") == "webhook"
    assert metrics.sink_of("lineage:http") == metrics.sink_of("lineage:file") == "lineage"


def _count(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_committed_unit_counts_its_stage_changes_and_decisions() -> None:
    moved = {"from_stage": "staging", "to_stage": "production", "trigger": "promote"}
    before = (_count("registry_transitions_total", **moved),
              _count("registry_approval_decisions_total", decision="approved"),
              _count("registry_approval_decisions_total", decision="rejected"))
    metrics.changes_committed([
        StageChanged(model="m", version=1, **moved), ModelCreated(model="m"),
        RequestApproved(model="m", version=1), RequestApproved(model="m", version=1),
        RequestRejected(model="m", version=2),
    ])
    after = (_count("registry_transitions_total", **moved),
             _count("registry_approval_decisions_total", decision="approved"),
             _count("registry_approval_decisions_total", decision="rejected"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 2, 1]


def test_a_delivery_still_to_be_retried_counts_as_retrying() -> None:
    before = _count("registry_deliveries_total", sink="webhook", outcome="retrying")
    seconds = _count("registry_delivery_duration_seconds_sum", sink="webhook")
    metrics.delivery_recorded("webhook:3", "pending", 250.0)
    assert _count("registry_deliveries_total", sink="webhook", outcome="retrying") == before + 1
    assert abs(_count("registry_delivery_duration_seconds_sum", sink="webhook") - seconds - 0.25) < 1e-9


def test_a_scrape_without_the_database_says_so_and_keeps_the_counters() -> None:
    text = metrics.render(None).decode()
    assert "registry_outbox_up 0.0" in text
    assert "registry_outbox_backlog{" not in text
    assert "# TYPE registry_http_requests_total counter" in text


def test_a_scrape_with_the_backlog_reports_each_part() -> None:
    text = metrics.render({"events": 2, "deliveries": 5, "held": 3, "oldest_age": 12.5,
                           "failed": 1}).decode()
    assert 'registry_outbox_backlog{kind="events"} 2.0' in text
    assert 'registry_outbox_backlog{kind="deliveries"} 5.0' in text
    assert 'registry_outbox_backlog{kind="held"} 3.0' in text
    assert "registry_outbox_oldest_undelivered_age_seconds 12.5" in text
    assert "registry_outbox_failed_deliveries 1.0" in text
    assert "registry_outbox_up 1.0" in text


def test_the_live_gauges_of_a_process_that_is_gone_are_dropped_and_its_counters_kept(
        tmp_path: Path) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # reaped: its pid names no process now
    dead, alive = ended.pid, os.getppid()  # pytest's parent (the shell, or CI's runner) lives on
    files = [f"gauge_livesum_{dead}.db", f"gauge_liveall_{dead}.db", f"counter_{dead}.db",
             f"histogram_{dead}.db", f"gauge_livesum_{alive}.db", f"gauge_livesum_{os.getpid()}.db"]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    assert metrics.forget_dead_processes(str(tmp_path)) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files[2:])
    assert metrics.forget_dead_processes(str(tmp_path)) == []


async def test_a_worker_is_unwell_once_one_of_its_loops_has_ended() -> None:
    """What the worker's /healthz answers: None while every loop runs (or while it stops)."""
    import asyncio

    from registry.workers.runner import Workers

    workers = Workers.__new__(Workers)  # the loops only: no container needed to ask
    forever = asyncio.Event()
    running = asyncio.create_task(forever.wait(), name="relay")
    ended = asyncio.create_task(asyncio.sleep(0), name="dispatch")
    await ended
    workers._tasks, workers._stopping = [running], False
    assert workers.problem() is None
    workers._tasks = [running, ended]
    assert workers.problem() == "worker loops ended: dispatch"
    workers._stopping = True
    assert workers.problem() is None
    running.cancel()


def test_a_scrape_answers_when_the_multiprocess_folder_is_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleted under a running ``serve --workers N`` (a /tmp cleaner): the scrape makes it again
    and answers, rather than failing every scrape from then on."""
    gone = tmp_path / "registry-metrics-gone"
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(gone))
    text = metrics.render({"events": 0, "deliveries": 0, "held": 0, "oldest_age": 0.0, "failed": 0}).decode()
    assert "registry_outbox_up 1.0" in text and 'registry_outbox_backlog{kind="held"} 0.0' in text
    assert gone.is_dir()
