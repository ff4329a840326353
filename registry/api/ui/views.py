"""What the pages draw, computed from what the services return: pure functions, no I/O.

The stage timeline is replayed from a model's audit entries; the lineage picture is laid out as
boxes and arrows for an SVG; a policy is put into words."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from registry.domain.gates import Policy
from registry.domain.permissions import Role
from registry.domain.stages import Stage

# The stage a version is usually moved to next, whose gates its page shows.
NEXT_STAGE = {Stage.NONE: Stage.STAGING, Stage.STAGING: Stage.PRODUCTION, Stage.ARCHIVED: Stage.STAGING}


def move_role(from_stage: Stage, to_stage: Stage) -> Role:
    return Role.RELEASER if Stage.PRODUCTION in (from_stage, to_stage) else Role.STAGER


def parse_at(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Segment:
    """A version's stay in one stage: from ``start`` until ``end`` (None: still there)."""

    stage: str
    version: int
    start: datetime
    end: datetime | None
    by: str
    trigger: str | None


def stays(entries: Iterable[Mapping[str, Any]]) -> list[Segment]:
    """Every stay of every version in staging or production, from a model's audit entries in
    chain order (registrations, imports, stage changes and deletions)."""
    open_: dict[int, tuple[str, datetime, str, str | None]] = {}
    done: list[Segment] = []

    def close(version: int, at: datetime) -> None:
        if version in open_:
            stage, start, by, trigger = open_.pop(version)
            done.append(Segment(stage, version, start, at, by, trigger))

    for e in entries:
        action, version, after = e["action"], e.get("version"), e.get("after") or {}
        if version is None:
            continue
        at = parse_at(e["at"])
        if action in ("model_version.stage_changed", "model_version.imported"):
            close(version, at)
            stage = after.get("stage")
            if stage in ("staging", "production"):
                open_[version] = (stage, at, e["actor"], after.get("trigger"))
        elif action == "model_version.deleted":
            close(version, at)
    done.extend(Segment(stage, v, start, None, by, trigger) for v, (stage, start, by, trigger) in open_.items())
    return sorted(done, key=lambda s: (s.start, s.version))


@dataclass(frozen=True, slots=True)
class Bar:
    segment: Segment
    x: float
    width: float
    label: str
    y: int = 0


LANE = 34  # px per row of bars


@dataclass(frozen=True, slots=True)
class Timeline:
    """The stays as bars of a ``width``-wide chart: production on one row (one version at a time),
    staging below it on as many rows as versions stayed there at once."""

    start: datetime
    end: datetime
    production: list[Bar]
    staging: list[Bar]
    staging_lanes: int
    width: int = 720

    @property
    def height(self) -> int:
        return self.axis_y + 24

    @property
    def axis_y(self) -> int:
        return 10 + LANE * (1 + self.staging_lanes) + 4

    @property
    def ticks(self) -> list[tuple[float, str]]:
        span = (self.end - self.start).total_seconds() or 1.0
        fmt = "%Y-%m-%d" if span > 3 * 86400 else "%m-%d %H:%M" if span > 3600 else "%H:%M:%S"
        return [(round(self.width * i / 4, 2), (self.start + timedelta(seconds=span * i / 4)).strftime(fmt))
                for i in range(5)]


def _lanes(segments: list[Segment], end: datetime) -> list[int]:
    """A row for each stay, the lowest free one: stays that overlap never share a row."""
    free_from: list[datetime] = []
    lanes = []
    for s in segments:
        for i, t in enumerate(free_from):
            if t <= s.start:
                free_from[i] = s.end or end
                lanes.append(i)
                break
        else:
            free_from.append(s.end or end)
            lanes.append(len(free_from) - 1)
    return lanes


def timeline(segments: list[Segment], now: datetime, width: int = 720) -> Timeline | None:
    if not segments:
        return None
    start = min(s.start for s in segments)
    end = max(now, *(s.end or now for s in segments))
    span = (end - start).total_seconds() or 1.0

    def bar(s: Segment, y: int) -> Bar:
        x = width * (s.start - start).total_seconds() / span
        w = width * ((s.end or end) - s.start).total_seconds() / span
        return Bar(s, round(x, 2), round(max(w, 3.0), 2), f"v{s.version}", y)

    production = [bar(s, 10) for s in segments if s.stage == "production"]
    staging = [s for s in segments if s.stage == "staging"]
    lanes = _lanes(staging, end)
    return Timeline(start, end, production,
                    [bar(s, 10 + LANE * (1 + lane)) for s, lane in zip(staging, lanes, strict=True)],
                    max(lanes, default=-1) + 1, width)


@dataclass(frozen=True, slots=True)
class Node:
    x: int
    y: int
    label: str
    kind: str  # dataset, run, version, stage
    detail: str = ""
    w: int = 170
    h: int = 44

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def middle(self) -> int:
        return self.y + self.h // 2


@dataclass(frozen=True, slots=True)
class Picture:
    nodes: list[Node]
    edges: list[tuple[Node, Node]]
    width: int
    height: int


def lineage_picture(model: str, version: int, lineage: Mapping[str, Any]) -> Picture:
    """Input datasets → training run → the version → each stage change, left to right."""
    gap, row = 60, 56
    inputs = [Node(10, 10 + i * row, i_["name"], "dataset", i_["namespace"])
              for i, i_ in enumerate(lineage["inputs"])]
    run = lineage.get("run")
    col = 10 + (170 + gap if inputs else 0)
    run_node = Node(col, 10, f"run {run['id']}", "run") if run else None
    col = col + (170 + gap if run_node else 0)
    version_node = Node(col, 10, f"{model} v{version}", "version")
    col += 170 + gap
    stages = [Node(col + i * (150 + 24), 10, s["to_stage"], "stage",
                   f"{str(s.get('at', ''))[:16].replace('T', ' ')} {s.get('actor', '')}", w=150)
              for i, s in enumerate(lineage["stages"])]
    edges: list[tuple[Node, Node]] = []
    first = run_node or version_node
    edges += [(i, first) for i in inputs]
    if run_node:
        edges.append((run_node, version_node))
    previous = version_node
    for s in stages:
        edges.append((previous, s))
        previous = s
    nodes = [*inputs, *([run_node] if run_node else []), version_node, *stages]
    width = max(n.right for n in nodes) + 10
    height = max(n.y + n.h for n in nodes) + 30
    return Picture(nodes, edges, width, height)


def _number(value: float) -> str:
    return f"{value:g}"


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


def policy_in_words(policy: Policy) -> list[str]:
    """One sentence per rule of a stage's policy; empty when it has none."""
    lines: list[str] = []
    for name, bounds in sorted(policy.metrics.items()):
        for bound, value in sorted(bounds.items()):
            lines.append({
                "min": f"{name} is at least {_number(value)}",
                "max": f"{name} is at most {_number(value)}",
                "min_delta_vs_production": f"{name} is at least {_number(value)} above the production version's",
                "max_delta_vs_production": f"{name} is at most {_number(value)} above the production version's",
            }.get(bound, f"{name} {bound} {_number(value)}"))
    if policy.required_fields:
        lines.append("the version has " + ", ".join(
            {"artifact": "at least one file"}.get(f, f"a {f.replace('_', ' ')}") for f in policy.required_fields))
    if policy.required_checks:
        lines.append("the latest report of check " + ", ".join(policy.required_checks) + " is success")
    if policy.min_staging_seconds:
        lines.append(f"the version has been in staging for {_duration(policy.min_staging_seconds)}")
    if policy.required_approvals:
        n = policy.required_approvals
        lines.append(f"{n} releaser{'s' if n != 1 else ''} other than the requester approved the request"
                     + (", which then applies the move" if policy.auto_apply else
                        "; the requester then makes the move"))
    return lines
