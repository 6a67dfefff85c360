"""What one tool action did, as the domain modules (booking, sms, transfer) report it to the dispatcher.

`message` is a short sentence the agent can act on or say; `data` carries facts for the agent (never a
phone number); `error` is the provider's own account of a failure, kept for the call record only.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from switchboard.tool import ToolOutcome


class ActionResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    outcome: ToolOutcome
    message: str = Field(max_length=1000)
    data: dict[str, Any] | None = None
    error: str | None = None

    @classmethod
    def succeeded(cls, message: str, data: dict[str, Any] | None = None) -> "ActionResult":
        return cls(outcome=ToolOutcome.SUCCEEDED, message=message, data=data)

    @classmethod
    def refused(cls, message: str, data: dict[str, Any] | None = None) -> "ActionResult":
        return cls(outcome=ToolOutcome.REFUSED, message=message, data=data)

    @classmethod
    def failed(cls, message: str, error: str) -> "ActionResult":
        return cls(outcome=ToolOutcome.FAILED, message=message, error=error)
