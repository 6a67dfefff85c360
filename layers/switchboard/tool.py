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


class ToolRequest(BaseModel):
    """The body of POST /tools/{name}, sent by the streaming service (SigV4-signed).

    Only the call and the LLM's arguments: who the caller is and which agent's policy applies are read
    from the call record by the tool Lambda, never taken from the request.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    call_sid: CallSid
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResult(BaseModel):
    """What the tool Lambda answers; `message` is what the agent is told (and may say) about the outcome."""

    model_config = ConfigDict(frozen=True)

    tool: ToolName
    outcome: ToolOutcome
    message: str = Field(max_length=1000)
    data: dict[str, Any] | None = None
    invocation_id: str | None = None
