"""Roles and model-name scopes, as pure functions.

The expected answers are written out here by hand (the role order, the stage × target matrix, which
names a glob matches) rather than derived from ``permissions``: a test computed from the code's own
rules would agree with any mistake in them.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

import pytest

from registry.api.errors import status_of
from registry.domain.errors import ForbiddenError, ValidationError
from registry.domain.permissions import (
    Role,
    like_patterns,
    require,
    role_for_transition,
    validate_patterns,
    visible,
)
from registry.domain.stages import Stage

# -- roles ------------------------------------------------------------------------------------------

ORDER = ["viewer", "editor", "stager", "releaser", "admin"]


def test_roles_are_cumulative_in_the_issue_order() -> None:
    assert [r.label for r in sorted(Role)] == ORDER
    assert Role.VIEWER < Role.EDITOR < Role.STAGER < Role.RELEASER < Role.ADMIN


@pytest.mark.parametrize("name", ORDER)
def test_parse_takes_each_role_by_its_label(name: str) -> None:
    role = Role.parse(name)
    assert role.label == name
    assert ORDER.index(name) == sorted(Role).index(role)


@pytest.mark.parametrize("name", ["Viewer", "ADMIN", "Releaser"])
def test_parse_ignores_case(name: str) -> None:
    assert Role.parse(name).label == name.lower()


@pytest.mark.parametrize("name", ["", "owner", "root", "admins", "view", " viewer", "viewer ", "1", "VIEWER\x00"])
def test_parse_refuses_an_unknown_role(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        Role.parse(name)
    # The message names the roles a client may use.
    for label in ORDER:
        assert label in info.value.detail


@pytest.mark.parametrize(("role", "needed", "allowed"), [
    (have, need, ORDER.index(have) >= ORDER.index(need)) for have in ORDER for need in ORDER
])
def test_require_allows_the_needed_role_and_above(role: str, needed: str, allowed: bool) -> None:
    if allowed:
        require(Role.parse(role), Role.parse(needed), "doing it")
    else:
        with pytest.raises(ForbiddenError) as info:
            require(Role.parse(role), Role.parse(needed), "doing it")
        assert status_of(info.value)[:2] == (403, "forbidden")
        assert "doing it" in info.value.detail and needed in info.value.detail


# -- which role a transition needs ------------------------------------------------------------------

# Every (current, target) pair, the invalid ones included (the role is checked before the stage
# table, so a stager asking for an impossible move into production still hears 403 first).
TRANSITION_ROLE: dict[tuple[str, str], str] = {
    ("none", "none"): "stager",
    ("none", "staging"): "stager",
    ("none", "production"): "releaser",
    ("none", "archived"): "stager",
    ("staging", "none"): "stager",
    ("staging", "staging"): "stager",
    ("staging", "production"): "releaser",
    ("staging", "archived"): "stager",
    ("production", "none"): "releaser",
    ("production", "staging"): "releaser",
    ("production", "production"): "releaser",
    ("production", "archived"): "releaser",
    ("archived", "none"): "stager",
    ("archived", "staging"): "stager",
    ("archived", "production"): "releaser",   # rollback
    ("archived", "archived"): "stager",
}


def test_the_matrix_covers_every_pair() -> None:
    assert set(TRANSITION_ROLE) == {(a.value, b.value) for a in Stage for b in Stage}


@pytest.mark.parametrize(("current", "target"), sorted(TRANSITION_ROLE))
def test_role_for_transition(current: str, target: str) -> None:
    assert role_for_transition(Stage(current), Stage(target)).label == TRANSITION_ROLE[current, target]


def test_a_stager_may_not_promote_but_may_submit() -> None:
    require(Role.STAGER, role_for_transition(Stage.NONE, Stage.STAGING), "submitting")
    with pytest.raises(ForbiddenError):
        require(Role.STAGER, role_for_transition(Stage.STAGING, Stage.PRODUCTION), "promoting")
    with pytest.raises(ForbiddenError):
        require(Role.STAGER, role_for_transition(Stage.PRODUCTION, Stage.ARCHIVED), "archiving")
    require(Role.RELEASER, role_for_transition(Stage.ARCHIVED, Stage.PRODUCTION), "rolling back")


# -- visibility -------------------------------------------------------------------------------------

NAMES = ["fraud", "fraud-a", "fraud-ab", "fraud-", "Fraud-a", "FRAUD-x", "xfraud-a", "churn", "churn-2",
         "fraud_a", "fraud%a", "fraud\\a", "a.b", "a?b", "a*b", "ab", "abb", "f", "ünïcode-1", "space name"]

# Which of NAMES each list of patterns shows: by hand.
VISIBLE: list[tuple[list[str] | None, set[str]]] = [
    (None, set(NAMES)),
    (["*"], set(NAMES)),
    (["fraud-*"], {"fraud-a", "fraud-ab", "fraud-"}),
    (["fraud-?"], {"fraud-a"}),
    (["fraud?a"], {"fraud-a", "fraud_a", "fraud%a", "fraud\\a"}),
    (["fraud"], {"fraud"}),
    (["churn"], {"churn"}),
    (["Fraud-*"], {"Fraud-a"}),
    (["*fraud-a"], {"fraud-a", "xfraud-a"}),
    (["*-*"], {"fraud-a", "fraud-ab", "fraud-", "Fraud-a", "FRAUD-x", "xfraud-a", "churn-2", "ünïcode-1"}),
    (["a?b"], {"a.b", "a?b", "a*b", "abb"}),
    (["a*b"], {"a.b", "a?b", "a*b", "ab", "abb"}),
    (["?"], {"f"}),
    (["fraud_a"], {"fraud_a"}),      # '_' is no wildcard in a glob
    (["fraud%a"], {"fraud%a"}),      # nor is '%'
    (["fraud\\a"], {"fraud\\a"}),    # nor is '\' an escape
    (["churn", "fraud-?"], {"churn", "fraud-a"}),
    (["space name"], {"space name"}),
    (["ünïcode-?"], {"ünïcode-1"}),
    (["nothing-*"], set()),
]


@pytest.mark.parametrize(("patterns", "expected"), VISIBLE)
def test_visible(patterns: list[str] | None, expected: set[str]) -> None:
    assert {n for n in NAMES if visible(patterns, n)} == expected


def test_visibility_is_case_sensitive() -> None:
    assert not visible(["fraud-*"], "Fraud")
    assert not visible(["fraud-*"], "Fraud-a")
    assert not visible(["fraud-*"], "FRAUD-A")
    assert not visible(["fraud"], "Fraud")
    assert visible(["fraud-*"], "fraud-A")


def test_a_pattern_must_match_the_whole_name() -> None:
    assert not visible(["fraud"], "fraud-a")
    assert not visible(["fraud"], "xfraud")
    assert not visible(["fraud-"], "fraud-a")


# -- validating patterns ----------------------------------------------------------------------------


@pytest.mark.parametrize("patterns", [
    None, ["*"], ["fraud-*"], ["a?b", "c"], ["x" * 256], ["space name"], ["ünïcode"], ["fraud_%\\a"],
])
def test_validate_patterns_accepts(patterns: list[str] | None) -> None:
    assert validate_patterns(patterns) == patterns


def test_validate_patterns_returns_a_list() -> None:
    assert validate_patterns(("a*", "b")) == ["a*", "b"]


@pytest.mark.parametrize("patterns", [
    [],                        # say "all models" by leaving it out, not with an empty list
    [""],
    ["fraud-[ab]"],            # character classes would not translate to LIKE
    ["fraud-["],
    ["fraud-]"],
    ["team/fraud"],
    ["models:/fraud"],
    ["fraud:1"],
    ["fraud\x00"],
    ["fraud\n*"],
    ["\tfraud"],
    ["fraud\x1f"],
    ["fraud\x7f"],
    ["fraud-*\n"],            # a trailing newline is a control character too ('$' would let it by)
    ["fraud\x85"],            # C1 controls, which model names refuse as well
    ["fraud\x9f"],
    ["x" * 257],
    ["fraud-*", "bad/one"],    # one bad pattern spoils the list
], ids=repr)
def test_validate_patterns_refuses(patterns: list[str]) -> None:
    with pytest.raises(ValidationError):
        validate_patterns(patterns)


# -- LIKE translation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("glob", "like"), [
    ("fraud-*", "fraud-%"),
    ("fraud-?", "fraud-_"),
    ("*", "%"),
    ("a*b?c", "a%b_c"),
    ("fraud_a", "fraud\\_a"),
    ("100%", "100\\%"),
    ("back\\slash", "back\\\\slash"),
    ("\\*", "\\\\%"),
    ("_%\\*?", "\\_\\%\\\\%_"),
    ("plain", "plain"),
])
def test_like_patterns_escape(glob: str, like: str) -> None:
    assert like_patterns([glob]) == [like]


def test_like_patterns_keeps_order_and_count() -> None:
    assert like_patterns(["b*", "a_", "c"]) == ["b%", "a\\_", "c"]
    assert like_patterns([]) == []


def like_match(pattern: str, value: str) -> bool:
    """SQL ``value LIKE pattern ESCAPE '\\'`` (case-sensitive, as on PostgreSQL), as a regex."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            assert i + 1 < len(pattern), f"dangling escape in {pattern!r}"
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.fullmatch("".join(out), value, re.DOTALL) is not None


def test_the_like_emulation_itself() -> None:
    assert like_match("a%", "abc") and like_match("a_c", "abc") and not like_match("a_c", "ac")
    assert like_match("a\\%", "a%") and not like_match("a\\%", "ab")
    assert like_match("a\\_", "a_") and not like_match("a\\_", "ab")
    assert like_match("a\\\\b", "a\\b") and not like_match("a\\\\b", "ab")


LIKE_NAMES = NAMES + ["100%", "100x", "100", "back\\slash", "backslash", "back/slash", "_", "%", "\\", "x",
                      "a_b", "a%b", "a\\b", "fraud-_", "fraud-%"]
GLOBS = ["*", "?", "fraud-*", "fraud-?", "fraud_a", "fraud%a", "fraud\\a", "fraud?a", "*_*", "*%*", "*\\*",
         "_", "%", "\\", "100%", "back\\slash", "a?b", "a*b", "*-?", "?*?", "Fraud-*", "fraud-_", "fraud-%",
         "ünïcode-*", "space name"]


@pytest.mark.parametrize("glob", GLOBS)
def test_the_like_translation_matches_exactly_what_the_glob_matches(glob: str) -> None:
    [like] = like_patterns([glob])
    assert {n for n in LIKE_NAMES if like_match(like, n)} == {n for n in LIKE_NAMES if fnmatchcase(n, glob)}
