"""The checked-in OpenAPI document is the one the code generates."""

import json

from functions.openapi import SPEC_PATH, build_spec, render


def test_checked_in_spec_matches_the_code() -> None:
    assert SPEC_PATH.exists(), "docs/openapi.json is missing: run `make openapi`"
    assert SPEC_PATH.read_text() == render(build_spec()), "docs/openapi.json is stale: run `make openapi`"


def test_every_route_is_documented() -> None:
    paths = json.loads(SPEC_PATH.read_text())["paths"]
    expected = {
        ("post", "/twilio/voice"),
        ("post", "/twilio/stream-ended"),
        ("post", "/twilio/amd"),
        ("post", "/twilio/status"),
        ("post", "/tools/{name}"),
        ("post", "/calls"),
        ("post", "/schedules"),
        ("get", "/calls/{sid}"),
    }
    documented = {(method, path) for path, operations in paths.items() for method in operations}
    assert expected <= documented
