import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest
from aws_lambda_powertools.metrics import MetricUnit

from switchboard.observability import call_context, current_call_sid, logger, metrics
from switchboard.phone import mask_phone, mask_phones_in_text

CALL_A = "CA" + "a" * 32
CALL_B = "CA" + "b" * 32


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The project's own logger, its output redirected to a buffer we can read back."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    previous = handler.setStream(stream)
    level = logger.log_level
    logger.setLevel("DEBUG")
    yield stream
    logger.setLevel(level)
    handler.setStream(previous)


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+14155550123", "+1********23"),
        ("call me on +44 20 7183 8750 please", "call me on +4*********50 please"),
        ("+1 (415) 555-0123", "+1********23"),
        ("(415) 555-0123", "4*******23"),
        ("4155550123", "4*******23"),
        ("From=%2B14155550123&To=%2B15550100200", "From=+1********23&To=+1********00"),
        ("x+14155550123", "x+1********23"),
        ("booked for 2026-11-24 at 10:30", "booked for 2026-11-24 at 10:30"),
        ("at 2026-11-24 08:39:22", "at 2026-11-24 08:39:22"),
        ("room 1204, 3 people", "room 1204, 3 people"),
        ("CA0123456789abcdef0123456789abcdef", "CA0123456789abcdef0123456789abcdef"),
    ],
)
def test_mask_phones_in_text(text: str, masked: str) -> None:
    assert mask_phones_in_text(text) == masked


def test_mask_phone_keeps_short_strings() -> None:
    assert mask_phone("911") == "911"


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_numbers_masked_at_every_level_everywhere(log_lines: io.StringIO, level: str) -> None:
    getattr(logger, level)(
        "caller +14155550123 asked",
        extra={"to": "+15550100200", "numbers": ["+15550100300"], "by_number": {"+15550100400": 1}},
    )
    (record,) = _records(log_lines)
    dumped = json.dumps(record)
    for number in ("+14155550123", "+15550100200", "+15550100300", "+15550100400"):
        assert number not in dumped
    assert record["to"] == "+1********00"
    assert record["by_number"] == {"+1********00": 1}
    assert str(record["timestamp"]).startswith("20")  # timestamps are not mistaken for numbers


def test_exceptions_are_masked_too(log_lines: io.StringIO) -> None:
    try:
        raise ValueError("cannot text +14155550123")
    except ValueError:
        logger.exception("send failed")
    (record,) = _records(log_lines)
    assert record["exception_name"] == "ValueError"
    assert "+14155550123" not in json.dumps(record)
    assert "+1********23" in str(record["exception"])


async def test_call_sid_is_the_correlation_id_per_task(log_lines: io.StringIO) -> None:
    async def one_call(call_sid: str) -> None:
        with call_context(call_sid):
            for _ in range(3):
                logger.info("frame")
                await asyncio.sleep(0)

    await asyncio.gather(one_call(CALL_A), one_call(CALL_B))
    logger.info("no call")
    records = _records(log_lines)
    assert sorted(str(r["correlation_id"]) for r in records[:-1]) == [CALL_A] * 3 + [CALL_B] * 3
    assert all(r["call_sid"] == r["correlation_id"] for r in records[:-1])
    assert "correlation_id" not in records[-1]
    assert current_call_sid() is None


def test_metrics_flush_as_emf_in_the_switchboard_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    metrics.add_metric(name="VoiceToVoice", unit=MetricUnit.Milliseconds, value=640)
    metrics.flush_metrics()
    (line,) = capsys.readouterr().out.splitlines()
    emf = json.loads(line)
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Switchboard"
    assert directive["Metrics"] == [{"Name": "VoiceToVoice", "Unit": "Milliseconds"}]
    assert emf["VoiceToVoice"] == [640.0]
    assert emf["service"] == "switchboard"
