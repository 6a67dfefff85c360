"""A turn: one utterance of the caller or the agent, and what of it was actually heard."""

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from switchboard.call import CallSid


class Role(StrEnum):
    """The speaker, named as the LLM's chat roles name them."""

    USER = "user"
    ASSISTANT = "assistant"


class Turn(BaseModel):
    model_config = ConfigDict(frozen=True)

    call_sid: CallSid
    index: int = Field(ge=0, description="Position in the conversation, from 0; unique per call.")
    role: Role
    text: str = Field(description="What was said (caller) or what the agent meant to say (agent).")
    started_at: datetime
    ended_at: datetime
    interrupted: bool = False
    heard_text: str | None = Field(
        default=None, description="What the caller actually heard of an interrupted agent turn."
    )

    @model_validator(mode="after")
    def _heard_only_when_interrupted(self) -> "Turn":
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        if self.heard_text is not None and not self.interrupted:
            raise ValueError("heard_text is only for interrupted turns")
        if self.interrupted and self.role is not Role.ASSISTANT:
            raise ValueError("only agent turns are interrupted")
        return self

    @property
    def spoken_text(self) -> str:
        """The text as it stands in the conversation: cut to what was heard when interrupted."""
        if self.interrupted:
            return self.heard_text or ""
        return self.text
