"""Rebuilding what Twilio signed from API Gateway's event."""

import base64

import pytest

from switchboard.twilio_webhook import form_body, raw_query


def test_raw_query_rebuilds_the_query_twilio_requested() -> None:
    assert raw_query(None) == ""
    assert raw_query({}) == ""
    assert raw_query({"agent_id": ["appointment-reminder"]}) == "agent_id=appointment-reminder"
    assert raw_query({"a": ["1", "2"], "b": ["x y"]}) == "a=1&a=2&b=x+y"


def test_form_body_decodes_base64_when_flagged() -> None:
    body = "CallSid=CA1&From=%2B15557654321"
    assert form_body(body, False) == body
    assert form_body(base64.b64encode(body.encode()).decode(), True) == body
    assert form_body(None, True) == ""
    assert form_body("", False) == ""


@pytest.mark.parametrize(("body", "flagged"), [("%%%", True), (base64.b64encode(b"\xff\xfe").decode(), True)])
def test_form_body_refuses_what_is_not_base64_or_utf8(body: str, flagged: bool) -> None:
    with pytest.raises(ValueError, match="base64 or UTF-8"):
        form_body(body, flagged)
