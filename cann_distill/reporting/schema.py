"""report.json's versioned JSON Schema (shipped in the package) and the version check readers use.

The schema is checked against real reports in the tests with the reference validator (`jsonschema`,
a test dependency). At run time readers (`report --compare`, the dashboard) only need to refuse a
report of another schema or version with a clear message, which `check_version` does without the
dependency: a full validation of the package's own output on every read would buy nothing.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from cann_distill.core.errors import ArtifactError

SCHEMA_ID = "cann-distill/report"
SCHEMA_VERSION = 2  # 1: the unversioned report.json of cann-distill < 0.2 (no "schema" key)


def schema() -> dict[str, Any]:
    return json.loads(resources.files("cann_distill.schemas").joinpath(f"report.v{SCHEMA_VERSION}.schema.json").read_text())


def check_version(report: Any, where: Path | str) -> dict[str, Any]:
    """The report when it is one this version reads; ArtifactError naming the version otherwise."""
    if not isinstance(report, dict):
        raise ArtifactError(f"{where}: not a cann-distill report (a JSON {type(report).__name__})")
    if "schema" not in report:
        raise ArtifactError(
            f"{where}: report of schema version 1 (no 'schema' key, written by an older cann-distill); "
            f"this cann-distill reads version {SCHEMA_VERSION}: rerun `cann-distill report RECIPE --force`"
        )
    if report.get("schema") != SCHEMA_ID or report.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{where}: report schema {str(report.get('schema'))[:40]} version {str(report.get('schema_version'))[:20]} "
            f"is unknown; this cann-distill reads {SCHEMA_ID} version {SCHEMA_VERSION}"
        )
    return report


def load_json(path: Path) -> Any:
    """report.json's content, unchecked; one line when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing: run `cann-distill report RECIPE` for that run first") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable ({type(exc).__name__})") from None


def read_report(path: Path) -> dict[str, Any]:
    return check_version(load_json(path), path)
