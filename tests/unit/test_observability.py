import asyncio
import io
import json
import logging

import pytest

from switchboard.observability import CallLogFormatter, call_context, current_call_sid
from switchboard.phone import mask_phone, mask_phones_in_text

CALL_A = "CA" + "a" * 32
CALL_B = "CA" + "b" * 32


@pytest.fixture
def log_lines() -> tuple[logging.Logger, io.StringIO]:
    """A logger using our formatter, writing to a buffer we can read back."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(CallLogFormatter())
    log = logging.getLogger("switchboard.test")
    log.handlers = [handler]
    log.setLevel(logging.DEBUG)
    log.propagate = False
    return log, stream


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+14155550123", "+1********23"),
        ("call me on +44 20 7183 8750 please", "call me on +4*********50 please"),
        ("4155550123", "4*******23"),
        ("booked for 2026-11-24 at 10:30", "booked for 2026-11-24 at 10:30"),
        ("room 1204, 3 people", "room 1204, 3 people"),
    ],
)
def test_mask_phones_in_text(text: str, masked: str) -> None:
    assert mask_phones_in_text(text) == masked


def test_mask_phone_keeps_short_strings() -> None:
    assert mask_phone("911") == "911"


def test_numbers_masked_above_debug_everywhere(log_lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = log_lines
    log.info("caller +14155550123 asked", extra={"to": "+15550100200", "numbers": ["+15550100300"]})
    (record,) = _records(stream)
    dumped = json.dumps(record)
    for number in ("+14155550123", "+15550100200", "+15550100300"):
        assert number not in dumped
    assert record["to"] == "+1********00"
    assert str(record["timestamp"])[:4].isdigit()  # timestamps are not mistaken for numbers


def test_exceptions_are_masked_too(log_lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = log_lines
    try:
        raise ValueError("cannot text +14155550123")
    except ValueError:
        log.exception("send failed")
    (record,) = _records(stream)
    assert "+14155550123" not in json.dumps(record)


def test_debug_keeps_numbers_for_local_debugging(log_lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = log_lines
    log.debug("raw +14155550123")
    (record,) = _records(stream)
    assert record["message"] == "raw +14155550123"


async def test_call_sid_is_the_correlation_id_per_task(log_lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = log_lines

    async def one_call(call_sid: str) -> None:
        with call_context(call_sid):
            for _ in range(3):
                log.info("frame")
                await asyncio.sleep(0)

    await asyncio.gather(one_call(CALL_A), one_call(CALL_B))
    log.info("no call")
    records = _records(stream)
    assert sorted(str(r["correlation_id"]) for r in records[:-1]) == [CALL_A] * 3 + [CALL_B] * 3
    assert all(r["call_sid"] == r["correlation_id"] for r in records[:-1])
    assert "correlation_id" not in records[-1]
    assert current_call_sid() is None
