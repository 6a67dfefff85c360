"""A scripted call: what the caller does and when, and optionally what the simulated LLM answers.

A scenario is a YAML file in streaming/simulator/scenarios/ (or anywhere, by path):

    name: barge-in
    agent: clinic-receptionist
    steps:                                  # the caller, in order
      - say: "What are your opening hours?"   # after the agent's reply (greeting) + 400 ms
      - say: "Sorry, actually, can I come on Tuesday instead?"
        during_reply_ms: 1500                 # 1.5 s into the agent's next reply: a barge-in
    agent_replies:                          # the simulated LLM, one entry per caller turn
      - say: "We are open from half past eight ..."

Every step has one trigger: `after_reply_ms` (default 400: once the agent has had its say, that long
after its audio stopped at the ear), `during_reply_ms` (that far into the agent's reply playing now, or
the next one) or `after_previous_ms` (that long after the previous step ended). See README.md.
"""

import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from streaming.simulator.speech import (
    DEFAULT_PAUSE_MS,
    MIN_GAP_MS,
    SPEAKING_RATE_WPM,
    CallerSound,
    SoundRun,
    is_spoken,
    plan_noise,
    plan_speech,
)
from switchboard.agent import ScriptedTool as ScriptedTool  # shared with the scripted LLM's flow
from switchboard.call import AgentId

SCENARIO_DIR: Final = Path(__file__).resolve().parent / "scenarios"
DEFAULT_REPLY_GAP_MS: Final = 400
DEFAULT_BACKCHANNEL_AT_MS: Final = 1500
# The customParameter the simulator adds to every `start`: how many runs of caller sound earlier streams
# of the call carried, so the simulated STT of a resumed stream aligns to the right utterance.
SOUND_RUNS_PARAMETER: Final = "sim_sound_runs"


class ScenarioError(ValueError):
    """A scenario that cannot be used. The message names the file, the field and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Trigger:
    kind: Literal["after_reply", "during_reply", "after_previous"]
    ms: int


class _Step(_Strict):
    after_reply_ms: int | None = Field(default=None, ge=0, le=120_000)
    during_reply_ms: int | None = Field(default=None, ge=0, le=120_000)
    after_previous_ms: int | None = Field(default=None, ge=0, le=600_000)

    kind: ClassVar[str]

    @model_validator(mode="after")
    def _one_trigger(self) -> Self:
        given = [t for t in (self.after_reply_ms, self.during_reply_ms, self.after_previous_ms) if t is not None]
        if len(given) > 1:
            raise ValueError("give at most one of after_reply_ms, during_reply_ms, after_previous_ms")
        return self

    @property
    def trigger(self) -> Trigger:
        if self.during_reply_ms is not None:
            return Trigger("during_reply", self.during_reply_ms)
        if self.after_previous_ms is not None:
            return Trigger("after_previous", self.after_previous_ms)
        return Trigger("after_reply", DEFAULT_REPLY_GAP_MS if self.after_reply_ms is None else self.after_reply_ms)

    @property
    def expects_answer(self) -> bool:
        """Whether the agent should reply to this step (a turn of the caller), as opposed to going on."""
        return False


class Say(_Step):
    """The caller says `say`. "…" or "..." inside is a pause of `pause_ms` (a thinking pause)."""

    say: str = Field(min_length=1, max_length=2000)
    pause_ms: int | None = Field(default=None, ge=MIN_GAP_MS, le=10_000)
    duration_ms: int | None = Field(default=None, ge=20, le=60_000, description="Speech length without pauses.")
    words_per_minute: float | None = Field(default=None, ge=60, le=400)

    kind: ClassVar[str] = "say"

    @property
    def expects_answer(self) -> bool:
        return True

    @field_validator("say")
    @classmethod
    def _has_words(cls, value: str) -> str:
        if not any(is_spoken(word) for word in value.split()):
            raise ValueError("nothing to say")
        return value


class Backchannel(_Step):
    """A short word said while the agent speaks, not a turn: "mm-hm", "yeah", "okay", "right"."""

    backchannel: str = Field(min_length=1, max_length=20)

    kind: ClassVar[str] = "backchannel"

    @field_validator("backchannel")
    @classmethod
    def _short(cls, value: str) -> str:
        if len(value.split()) > 2 or not is_spoken(value):
            raise ValueError("a backchannel is one or two short words")
        return value

    @property
    def trigger(self) -> Trigger:
        if self.after_reply_ms is None and self.after_previous_ms is None and self.during_reply_ms is None:
            return Trigger("during_reply", DEFAULT_BACKCHANNEL_AT_MS)
        return super().trigger


class Noise(_Step):
    """A burst of non-speech sound (a cough, a door) lasting `noise` ms."""

    noise: int = Field(ge=20, le=5000)
    # Louder than the simulated STT's energy threshold (-40 dBFS), or it would not see the burst.
    level_dbfs: float = Field(default=-30.0, ge=-35.0, le=-6.0)

    kind: ClassVar[str] = "noise"


class Dtmf(_Step):
    """The caller keys `dtmf` (digits, *, #, A-D), one every `interval_ms`."""

    dtmf: str = Field(pattern=r"^[0-9*#A-D]{1,32}$")
    interval_ms: int = Field(default=150, ge=50, le=5000)

    kind: ClassVar[str] = "dtmf"

    @property
    def expects_answer(self) -> bool:
        return True


class WaitSilent(_Step):
    """The caller stays silent for `wait_silent` ms (Twilio still sends silence frames)."""

    wait_silent: int = Field(ge=20, le=600_000)

    kind: ClassVar[str] = "wait_silent"


class DropOptions(_Strict):
    resume_after_ms: int = Field(default=500, ge=0, le=60_000, description="Silence before the new stream.")


class DropSocket(_Step):
    """The socket drops without a `stop`; a new stream for the same CallSid resumes the call."""

    drop_socket: DropOptions

    kind: ClassVar[str] = "drop_socket"


class Hangup(_Step):
    """The caller hangs up: `stop`, then the socket closes."""

    hangup: Literal[True]

    kind: ClassVar[str] = "hangup"


_STEP_KEYS: Final = ("say", "backchannel", "noise", "dtmf", "wait_silent", "drop_socket", "hangup")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, _Step):
        return value.kind
    if isinstance(value, dict):
        kinds = [key for key in _STEP_KEYS if key in value]
        if len(kinds) == 1:
            return kinds[0]
    return None


Step = Annotated[
    Annotated[Say, Tag("say")]
    | Annotated[Backchannel, Tag("backchannel")]
    | Annotated[Noise, Tag("noise")]
    | Annotated[Dtmf, Tag("dtmf")]
    | Annotated[WaitSilent, Tag("wait_silent")]
    | Annotated[DropSocket, Tag("drop_socket")]
    | Annotated[Hangup, Tag("hangup")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message=f"a step has exactly one of: {', '.join(_STEP_KEYS)}",
    ),
]


class AgentReply(_Strict):
    """What the simulated LLM answers to one caller turn: text, and/or a tool call and what it says after."""

    say: str | None = Field(default=None, min_length=1)
    tool: ScriptedTool | None = None
    then: str | None = Field(default=None, min_length=1, description="Said after the tool's result.")

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.say is None and self.tool is None:
            raise ValueError("a reply says something, calls a tool, or both")
        if self.then is not None and self.tool is None:
            raise ValueError("`then` follows a tool call: give `tool` too")
        return self


class Scenario(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""
    agent: AgentId = "clinic-receptionist"
    words_per_minute: float = Field(default=SPEAKING_RATE_WPM, ge=60, le=400)
    pause_ms: int = Field(default=DEFAULT_PAUSE_MS, ge=MIN_GAP_MS, le=10_000)
    caller_f0: float = Field(default=120.0, ge=60.0, le=300.0)
    # Phone speech sits around -20 dBFS; its quietest 20 ms frames stay well above the STT's -40 dBFS.
    caller_level_dbfs: float = Field(default=-20.0, ge=-26.0, le=-6.0)
    step_timeout_ms: int = Field(default=20_000, ge=100, le=600_000, description="Longest wait for a trigger.")
    hangup_after_ms: int = Field(
        default=3000, ge=0, le=600_000, description="After the last step and the agent's reply: hang up if still on."
    )
    steps: list[Step] = Field(min_length=1)
    agent_replies: list[AgentReply] | None = None

    @model_validator(mode="after")
    def _playable(self) -> Self:
        for index, step in enumerate(self.steps[:-1]):
            if isinstance(step, Hangup):
                raise ValueError(f"steps.{index}: hangup must be the last step")
        # Plan every sound now, so a say that cannot be timed (a duration too short for its words) is
        # refused with the file, not when the call reaches it.
        for index, step in enumerate(self.steps):
            try:
                self._plan(step)
            except ValueError as exc:
                raise ValueError(f"steps.{index}: {exc}") from None
        return self

    def sound(self, index: int) -> CallerSound | None:
        """The audio plan of step `index`, or None for a step without sound."""
        return self._sounds[index]

    @cached_property
    def _sounds(self) -> tuple[CallerSound | None, ...]:
        return tuple(self._plan(step) for step in self.steps)

    def _plan(self, step: _Step) -> CallerSound | None:
        if isinstance(step, Say):
            return plan_speech(
                step.say,
                words_per_minute=step.words_per_minute or self.words_per_minute,
                pause_ms=step.pause_ms or self.pause_ms,
                duration_ms=step.duration_ms,
            )
        if isinstance(step, Backchannel):
            return plan_speech(step.backchannel, words_per_minute=self.words_per_minute)
        if isinstance(step, Noise):
            return plan_noise(step.noise)
        return None

    def sound_runs(self) -> list[SoundRun]:
        """Every run of caller sound in the script, in order: what the simulated STT aligns onsets to."""
        return [run for sound in self._sounds if sound is not None for run in sound.runs]

    def seed(self, index: int) -> int:
        """The synthesizer seed of step `index`: the same audio on every run, different between steps."""
        return zlib.crc32(f"{self.name}:{index}".encode())


def _format_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid scenario ({exc.error_count()} problem(s))"]
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  {field}: {err['msg']}")
    return "\n".join(lines)


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: a scenario must be a mapping of fields, got {type(raw).__name__}")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(_format_error(source, exc)) from exc


def load_scenario(name: str | Path) -> Scenario:
    """A shipped scenario by name (`barge-in`), or any scenario file by path."""
    path = Path(name) if isinstance(name, Path) or name.endswith((".yaml", ".yml")) else SCENARIO_DIR / f"{name}.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(shipped_scenario_names())
        raise ScenarioError(f"no scenario {str(name)!r} (no file {path}); shipped: {known}") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from exc
    scenario = parse_scenario(text, str(path))
    if scenario.name != path.stem:
        raise ScenarioError(f"{path}: name: {scenario.name!r} does not match the file name {path.stem!r}")
    return scenario


def shipped_scenario_names() -> list[str]:
    return sorted(path.stem for path in SCENARIO_DIR.glob("*.yaml"))


def shipped_scenarios() -> dict[str, Scenario]:
    """Every scenario in streaming/simulator/scenarios/, by name."""
    return {name: load_scenario(name) for name in shipped_scenario_names()}
