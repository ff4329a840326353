"""Shared by the client scripts in this folder. They run with an MLflow client venv's interpreter
(never inside pytest), talk to the registry named by ``MLFLOW_TRACKING_URI`` and print one JSON
summary as their last line of stdout, which the test reads back against the native API."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from typing import Any

warnings.simplefilter("ignore")  # 3.x warns that stages are deprecated; the calls still go out

import mlflow  # noqa: E402
from mlflow.exceptions import MlflowException, RestException  # noqa: E402

MAJOR = int(mlflow.__version__.split(".")[0])


def refused(code: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Call it; it must fail with the server's error ``code`` (a RestException: the server's JSON
    error, not a check inside the client). Returns the server's message."""
    try:
        call(*args, **kwargs)
    except RestException as exc:
        assert exc.error_code == code, f"{call.__name__}{args}: {exc.error_code}, not {code}: {exc.message}"
        return exc.message
    except MlflowException as exc:
        raise AssertionError(f"{call.__name__}{args} failed in the client, not the server: "
                             f"{exc.error_code}: {exc.message}") from exc
    raise AssertionError(f"{call.__name__}{args} succeeded; expected {code}")


def refused_anywhere(code: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Like :func:`refused`, but the client may refuse before sending (2.x validates aliases)."""
    try:
        call(*args, **kwargs)
    except MlflowException as exc:
        assert exc.error_code == code, f"{call.__name__}{args}: {exc.error_code}, not {code}: {exc.message}"
        return exc.message
    raise AssertionError(f"{call.__name__}{args} succeeded; expected {code}")


def versions_of(found: Any) -> list[int]:
    return sorted(int(v.version) for v in found)


def by_stage(found: Any) -> dict[str, int]:
    """``get_latest_versions``'s answer as {stage: version}; at most one version per stage."""
    out: dict[str, int] = {}
    for v in found:
        assert v.current_stage not in out, f"two latest versions in {v.current_stage}"
        out[v.current_stage] = int(v.version)
    return out


def emit(summary: dict[str, Any]) -> None:
    summary["mlflow_version"] = mlflow.__version__
    sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
