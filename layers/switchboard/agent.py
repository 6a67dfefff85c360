"""Agents: what an agent says, how it thinks, which tools it may use and under which policies.

An agent is a YAML file, agents/<id>.yaml, with its knowledge base under agents/<id>/kb/.
Every field is validated; a bad file fails with the file, the field and the reason.
"""

import re
from collections.abc import Iterator, Mapping
from datetime import date, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from switchboard.call import AgentId, CallDirection
from switchboard.phone import E164
from switchboard.tool import ToolName


class AgentConfigError(ValueError):
    """An agent file that cannot be used. The message names the file, the field and the reason."""


class _Strict(BaseModel):
    # A misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _valid_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
    return name


TimeZoneName = Annotated[str, AfterValidator(_valid_timezone)]


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


class Hours(_Strict):
    """An opening window within one day, e.g. {open: "09:00", close: "17:00"}."""

    open: time
    close: time

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.close <= self.open:
            raise ValueError(f"close {self.close} is not after open {self.open}")
        return self


class Voice(_Strict):
    """How the agent speaks: a Polly voice (whether it supports the engine is checked against Polly at
    start), or eSpeak NG offline, where `id` is an eSpeak voice name such as "en-us"."""

    provider: Literal["polly", "espeak"] = "polly"
    id: str = Field(min_length=1, examples=["Joanna"])
    engine: Literal["neural", "standard", "generative", "long-form"] = "neural"


class Listening(_Strict):
    """How the agent hears: Amazon Transcribe streaming, or pocketsphinx offline (English only)."""

    provider: Literal["transcribe", "pocketsphinx"] = "transcribe"
    # A Transcribe custom vocabulary, created beforehand in the deployment's account and region.
    vocabulary: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[0-9a-zA-Z._-]+$")


_NEXT_WEEKDAY = re.compile(r"\{next:(" + "|".join(day.value for day in Weekday) + r")\}")


class ScriptedTool(_Strict):
    """A tool call a script makes (the scripted LLM's flow, the simulator's agent replies). In string arguments,
    `{next:tue}` stands for the date of the next Tuesday after today (ISO), so that a scripted booking stays in
    the future whenever the script runs."""

    name: ToolName
    arguments: dict[str, Any] = Field(default_factory=dict)

    def arguments_on(self, today: date) -> dict[str, Any]:
        weekdays = list(Weekday)  # Monday first, as date.weekday() counts

        def next_day(match: re.Match[str]) -> str:
            ahead = (weekdays.index(Weekday(match[1])) - today.weekday() - 1) % 7 + 1
            return (today + timedelta(days=ahead)).isoformat()

        return {
            name: _NEXT_WEEKDAY.sub(next_day, value) if isinstance(value, str) else value
            for name, value in self.arguments.items()
        }


class FlowStep(_Strict):
    """One step of the scripted LLM's flow: when the caller's latest turn contains any of `when` (whole words,
    any case; DTMF comes as "[keypad] 1 2", so "keypad 1" matches a key press of 1), it says `say`, calls
    `tool`, and says `then` once the tool succeeded. The first step that matches is the one taken."""

    when: list[Annotated[str, Field(min_length=1, max_length=200, pattern=r"[A-Za-z0-9]")]] = Field(min_length=1)
    say: str | None = Field(default=None, min_length=1, max_length=1000)
    tool: ScriptedTool | None = None
    then: str | None = Field(default=None, min_length=1, max_length=1000, description="Said after the tool's result.")

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.say is None and self.tool is None:
            raise ValueError("a step says something, calls a tool, or both")
        if self.then is not None and self.tool is None:
            raise ValueError("`then` follows a tool call: give `tool` too")
        return self


class LanguageModel(_Strict):
    provider: Literal["openai", "bedrock", "scripted"] = "openai"
    model: str = Field(default="gpt-4o-mini", min_length=1)
    temperature: float = Field(default=0.4, ge=0.0, le=2.0)
    max_tokens: int = Field(default=150, ge=1, le=4096)
    # The scripted model (provider "scripted", or standing in offline when no API key is configured); without
    # a flow it only ever says the fallback.
    flow: list[FlowStep] = Field(default_factory=list, description="The scripted model's steps, in priority order.")
    fallback: str = Field(
        default="Sorry, I didn't catch that. Could you say it another way?",
        min_length=1,
        max_length=1000,
        description="What the scripted model says when no step of the flow matches.",
    )


class Conversation(_Strict):
    """Turn-taking and pacing. Defaults suit a phone line."""

    filler_after_ms: int = Field(default=900, ge=0, le=10_000, description="Play a filler if no sentence yet.")
    fillers: list[str] = Field(default_factory=lambda: ["One moment."], min_length=1)
    idle_reprompt_s: float = Field(default=8.0, gt=0, le=120)
    idle_reprompt: str = "Are you still there?"
    idle_hangup_s: float = Field(default=8.0, gt=0, le=120, description="After the reprompt, then goodbye.")
    goodbye: str = "Thank you for calling. Goodbye."
    max_call_s: int = Field(default=900, ge=30, le=14_400)


class BookingPolicy(_Strict):
    """Appointments go only into open slots of this calendar, inside opening hours."""

    calendar: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    timezone: TimeZoneName
    slot_minutes: int = Field(default=30, ge=5, le=480)
    opening_hours: dict[Weekday, list[Hours]] = Field(min_length=1)
    max_days_ahead: int = Field(default=60, ge=1, le=366)
    may_reschedule: bool = Field(
        default=False,
        description="book_appointment may move the appointment named in the call's facts instead of adding one.",
    )


class SmsPolicy(_Strict):
    """SMS go only to the caller's own number; this caps how many one call may send."""

    max_per_call: int = Field(default=2, ge=1, le=10)


class TransferPolicy(_Strict):
    """Transfers go only to these numbers, named so the LLM can ask for one by name."""

    allow: dict[str, E164] = Field(min_length=1, examples=[{"front_desk": "+15550100100"}])


class EndCallPolicy(_Strict):
    """end_call has no settings: listing it is what lets the agent hang up."""


class Tools(_Strict):
    """The tools the agent may use: a tool absent here does not exist for the agent."""

    book_appointment: BookingPolicy | None = None
    send_sms: SmsPolicy | None = None
    transfer_call: TransferPolicy | None = None
    end_call: EndCallPolicy | None = None

    @property
    def enabled(self) -> frozenset[ToolName]:
        return frozenset(ToolName(name) for name in type(self).model_fields if getattr(self, name) is not None)


class Voicemail(_Strict):
    """What an outbound call does when a machine answers."""

    action: Literal["leave_message", "hang_up"] = "hang_up"
    message: str | None = None

    @model_validator(mode="after")
    def _message_when_leaving_one(self) -> Self:
        if self.action == "leave_message" and not (self.message and self.message.strip()):
            raise ValueError("leave_message needs a message")
        return self


class Outbound(_Strict):
    """Who an agent may call, when, and how often it tries again."""

    from_number: E164
    allowed_countries: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = Field(min_length=1)
    calling_hours: Hours = Field(
        default=Hours(open=time(9), close=time(20)),
        description="In the callee's local time, from the number; where a number spans zones, every one of them.",
    )
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_after_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    retry_on: tuple[Literal["busy", "no-answer", "failed"], ...] = ("busy", "no-answer")
    voicemail: Voicemail = Voicemail()


class AgentConfig(_Strict):
    id: AgentId
    name: str = Field(min_length=1)
    directions: list[CallDirection] = Field(min_length=1)
    language: str = Field(default="en-US", pattern=r"^[a-z]{2}-[A-Z]{2}$")
    voice: Voice
    listening: Listening = Listening()
    greeting: str = Field(min_length=1, max_length=1000)
    system_prompt: str = Field(min_length=1)
    llm: LanguageModel = LanguageModel()
    conversation: Conversation = Conversation()
    tools: Tools = Tools()
    phone_numbers: list[E164] = Field(default_factory=list, description="Numbers this agent answers.")
    knowledge_base: list[Path] = Field(default_factory=list, description="Files under agents/<id>/kb/.")
    knowledge_search: Literal["every_turn", "tool"] = Field(
        default="every_turn",
        description="every_turn: the best passages for each caller turn go into the LLM's context; "
        "tool: the LLM gets a search_knowledge_base tool to call when it wants.",
    )
    outbound: Outbound | None = None

    @model_validator(mode="after")
    def _flow_uses_enabled_tools(self) -> Self:
        enabled = self.tools.enabled
        for index, step in enumerate(self.llm.flow):
            if step.tool is not None and step.tool.name not in enabled:
                raise ValueError(f"llm.flow.{index}.tool: {step.tool.name.value} is not among this agent's tools")
        return self

    @model_validator(mode="after")
    def _direction_needs(self) -> Self:
        if CallDirection.INBOUND in self.directions and not self.phone_numbers:
            raise ValueError("an inbound agent needs phone_numbers to answer")
        if CallDirection.OUTBOUND in self.directions and self.outbound is None:
            raise ValueError("an outbound agent needs an outbound section")
        return self


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid agent ({exc.error_count()} problem(s))"]
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  {field}: {err['msg']}")
    return "\n".join(lines)


def load_agent(path: Path) -> AgentConfig:
    """Read and validate one agent file; knowledge-base paths come back resolved and checked."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AgentConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise AgentConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise AgentConfigError(f"{path}: an agent file must be a mapping of fields, got {type(raw).__name__}")
    if raw.get("id", path.stem) != path.stem:
        raise AgentConfigError(f"{path}: id: {raw.get('id')!r} does not match the file name {path.stem!r}")
    try:
        agent = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise AgentConfigError(_format_validation_error(path, exc)) from exc
    kb_root = (path.parent / agent.id / "kb").resolve()
    resolved: list[Path] = []
    for index, entry in enumerate(agent.knowledge_base):
        file = (kb_root / entry).resolve()
        if not file.is_relative_to(kb_root):
            raise AgentConfigError(f"{path}: knowledge_base.{index}: {entry} is outside {kb_root}")
        if not file.is_file():
            raise AgentConfigError(f"{path}: knowledge_base.{index}: {file} does not exist")
        resolved.append(file)
    return agent.model_copy(update={"knowledge_base": resolved})


class AgentDirectory:
    """Every agent of a deployment, and which one answers a number."""

    def __init__(self, agents: Mapping[Path, AgentConfig]) -> None:
        """`agents` maps each agent's file to it, so a clash names both files."""
        self._by_id: dict[str, AgentConfig] = {}
        self._by_number: dict[str, AgentConfig] = {}
        source: dict[str, Path] = {}
        for path, agent in agents.items():
            if agent.id in self._by_id:
                raise AgentConfigError(f"{path}: id: {agent.id!r} is already defined in {source[agent.id]}")
            self._by_id[agent.id] = agent
            source[agent.id] = path
            for index, number in enumerate(agent.phone_numbers):
                if (other := self._by_number.get(number)) is not None:
                    raise AgentConfigError(
                        f"{path}: phone_numbers.{index}: {number} is already answered by {source[other.id]}"
                    )
                self._by_number[number] = agent

    @classmethod
    def load(cls, directory: Path) -> "AgentDirectory":
        files = sorted(directory.glob("*.yaml"))
        if not files:
            raise AgentConfigError(f"{directory}: no agent files (*.yaml)")
        return cls({file: load_agent(file) for file in files})

    def __iter__(self) -> Iterator[AgentConfig]:
        return iter(self._by_id.values())

    def get(self, agent_id: str) -> AgentConfig | None:
        return self._by_id.get(agent_id)

    def answering(self, number: str) -> AgentConfig | None:
        """The inbound agent for a called number, if any."""
        return self._by_number.get(number)
