"""The error catalogue: one declaration per kind, every engine kind covered, no string kinds at call sites."""

from __future__ import annotations

import re
from pathlib import Path

from serving.api.catalogue import Error
from serving.messages import ErrorKind

API = Path(__file__).resolve().parents[2] / "serving" / "api"


def test_every_engine_kind_has_its_entry():
    for kind in ErrorKind:
        assert Error.of_engine(kind).name == kind.name
    assert Error.of_engine(ErrorKind.ADAPTER_NOT_FOUND).error_type == "validation"


def test_error_types_are_unique_and_statuses_are_errors():
    assert len({error.error_type for error in Error if error is not Error.ADAPTER_NOT_FOUND}) == len(Error) - 1
    for error in Error:
        assert 400 <= error.status() < 600 and 400 <= error.status(openai=True) < 600
        assert error.spec.metric and error.spec.openai_type


def test_call_sites_name_catalogue_members_not_strings():
    pattern = re.compile(r"\b(ApiError|BodyError)\(\s*[\"'0-9]")
    offenders = [f"{path.name}:{number}" for path in API.rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
