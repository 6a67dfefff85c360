"""A tool invocation: the agent asked for a side effect; this records what was asked and what happened."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from switchboard.call import CallSid


class ToolName(StrEnum):
    BOOK_APPOINTMENT = "book_appointment"
    SEND_SMS = "send_sms"
    TRANSFER_CALL = "transfer_call"
    END_CALL = "end_call"


class ToolOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    REFUSED = "refused"  # a policy said no: not an error, the agent tells the caller
    FAILED = "failed"  # the action itself broke (provider error, timeout)


class ToolInvocation(BaseModel):
    model_config = ConfigDict(frozen=True)

    call_sid: CallSid
    invocation_id: str = Field(min_length=1, max_length=128)
    tool: ToolName
    arguments: dict[str, Any]
    outcome: ToolOutcome
    result: dict[str, Any] | None = None
    error: str | None = None
    requested_at: datetime
    completed_at: datetime
