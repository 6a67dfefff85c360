"""Call events on the EventBridge bus: CallStarted, TurnCompleted, ToolInvoked, CallCompleted.

Other teams subscribe to these (CRM updates, analytics) without touching the call path. The detail never
carries a transcript or a phone number: it names the call; the record in DynamoDB holds the rest.
"""

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import boto3
from pydantic import BaseModel, ConfigDict, Field

from switchboard.call import CallSid

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

SOURCE = "switchboard"


class CallEventType(StrEnum):
    CALL_STARTED = "CallStarted"
    TURN_COMPLETED = "TurnCompleted"
    TOOL_INVOKED = "ToolInvoked"
    CALL_COMPLETED = "CallCompleted"


class CallEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: CallEventType
    call_sid: CallSid
    agent_id: str
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # Small, non-personal facts: status, duration, tool name and outcome, turn index.
    facts: dict[str, Any] = Field(default_factory=dict)


class EventPublishError(RuntimeError):
    """EventBridge did not accept an event."""


class CallEvents:
    def __init__(self, bus_name: str, client: "EventBridgeClient | None" = None) -> None:
        self.bus_name = bus_name
        self._client = client

    @property
    def client(self) -> "EventBridgeClient":
        if self._client is None:
            self._client = boto3.client("events")
        return self._client

    def emit(self, event: CallEvent) -> None:
        detail = {"call_sid": event.call_sid, "agent_id": event.agent_id, "at": event.at.isoformat(), **event.facts}
        response = self.client.put_events(
            Entries=[
                {
                    "Source": SOURCE,
                    "DetailType": event.type.value,
                    "Detail": json.dumps(detail, default=str, separators=(",", ":")),
                    "EventBusName": self.bus_name,
                    "Time": event.at,
                }
            ]
        )
        if response.get("FailedEntryCount", 0):
            failure = response["Entries"][0]
            raise EventPublishError(f"{event.type} for {event.call_sid}: {failure.get('ErrorCode')}")
