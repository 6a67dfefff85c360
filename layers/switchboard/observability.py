"""Logging and metrics, configured once for every deployable.

- One Powertools Logger and one Metrics object per process (`logger`, `metrics`).
- The CallSid is the correlation id. It lives in a ContextVar, not in the logger's global keys, because
  the streaming service runs many calls in one process: each asyncio task sees its own call.
- Phone numbers are masked in every log line, at every level (messages, keys and values of extra
  data, exceptions): Powertools can turn DEBUG on in production (POWERTOOLS_LOG_LEVEL, sampling), so
  no level may carry a raw number. Transcripts are logged at DEBUG only.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.types import PowertoolsLogRecord

from switchboard.phone import mask_phones_in_text

SERVICE = "switchboard"
NAMESPACE = "Switchboard"

_call_sid: ContextVar[str | None] = ContextVar("call_sid", default=None)


# Keys Powertools and we set ourselves: never phone numbers, and masking would garble them.
_TRUSTED_KEYS = frozenset(
    {
        "level",
        "location",
        "timestamp",
        "service",
        "correlation_id",
        "call_sid",
        "xray_trace_id",
        "sampling_rate",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
    }
)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_phones_in_text(value)
    if isinstance(value, dict):
        return {_mask(key): _mask(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else (an exception object in a stack trace, say) is logged through str(): mask that.
    return mask_phones_in_text(str(value))


class CallLogFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON lines, plus the current CallSid, with phone numbers masked."""

    def format(self, record: logging.LogRecord) -> str:
        if (call_sid := _call_sid.get()) is not None:
            record.correlation_id = call_sid
            record.call_sid = call_sid
        return super().format(record)

    def serialize(self, log: dict[str, Any] | PowertoolsLogRecord) -> str:
        if isinstance(log, dict):
            log = {key: value if key in _TRUSTED_KEYS else _mask(value) for key, value in log.items()}
        return super().serialize(log)


logger = Logger(service=SERVICE, logger_formatter=CallLogFormatter())
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


@contextmanager
def call_context(call_sid: str) -> Iterator[None]:
    """Every log line inside carries this CallSid; tasks started inside inherit it."""
    token = _call_sid.set(call_sid)
    try:
        yield
    finally:
        _call_sid.reset(token)


def current_call_sid() -> str | None:
    return _call_sid.get()
