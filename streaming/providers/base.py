"""The three provider interfaces (STT, LLM, TTS) and what flows through them.

Audio across these interfaces is 16-bit little-endian PCM, 8 kHz mono: what G.711 decodes to and what
Transcribe and Polly take and give at 8 kHz, so nothing is resampled on the production path.
Times on transcripts are audio-stream milliseconds (the position in the caller's audio), not wall
clock: that is what the provider knows, and it makes the engine's endpointing testable on a fast clock.
"""

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from switchboard.agent import AgentConfig, Voice
from switchboard.state import ChatMessage


@dataclass(frozen=True, slots=True)
class Transcript:
    """One result for one utterance segment, partial or final.

    `text` is the whole current hypothesis for the segment; `stable_text` its leading part that will not
    change any more (Transcribe's partial-result stabilization); for a final both are equal.
    """

    segment_id: str
    text: str
    stable_text: str
    is_final: bool
    start_ms: int
    end_ms: int


class SpeechSession(Protocol):
    """One caller's audio going in, transcripts coming out, for the length of a call."""

    async def send_audio(self, pcm16: bytes) -> None:
        """One frame (normally 20 ms) of the caller's audio, in order, as it arrives."""
        ...

    def transcripts(self) -> AsyncIterator[Transcript]:
        """Results as the provider produces them; ends when the session is closed."""
        ...

    async def aclose(self) -> None: ...


class SpeechToText(Protocol):
    async def start(self, *, language: str, vocabulary: str | None = None) -> SpeechSession:
        """A session in `language` (BCP-47, "en-US"); `vocabulary` names a provider-side custom vocabulary
        (the agent's listening.vocabulary), for providers that have them."""
        ...


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a tool. `arguments` is the JSON text as the model wrote it (may be invalid)."""

    call_id: str
    name: str
    arguments: str


LlmEvent = TextDelta | ToolCall


class LanguageModelError(RuntimeError):
    """The language model gave no (complete) reply, after its one retry if it had one. The message names the
    provider, the model and the reason; the engine answers the caller with phrases.APOLOGY and goes on."""


@dataclass(frozen=True, slots=True)
class ReplyDeadlines:
    """How long an LLM reply may take, and whether a failed attempt may be tried again.

    An attempt that produces nothing within `first_token_s` (text or a tool-call fragment) is abandoned.
    One retry is allowed, only while nothing has been handed to the engine yet (so nothing is said twice)
    and only if its own first token could still come within `first_token_budget_s` of the reply's start:
    past that, the caller has waited long enough and hears the apology instead. `total_s` bounds the whole
    reply, retry included, so a stream that stalls mid-way ends too.
    """

    first_token_s: float = 2.5
    first_token_budget_s: float = 5.5
    total_s: float = 20.0

    def __post_init__(self) -> None:
        if not 0 < self.first_token_s <= self.first_token_budget_s <= self.total_s:
            raise ValueError(
                "need 0 < first_token_s <= first_token_budget_s <= total_s, got "
                f"{self.first_token_s}, {self.first_token_budget_s}, {self.total_s}"
            )

    def retry_fits(self, started: float, now: float) -> bool:
        """Whether a retry begun at `now` (loop time) could give its first token within the budget."""
        return now - started + self.first_token_s <= self.first_token_budget_s


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    """What the caller said last (the latest user message with text), or ""."""
    for message in reversed(messages):
        if message.role == "user" and message.content:
            return message.content
    return ""


class LanguageModel(Protocol):
    def reply(self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]) -> AsyncIterator[LlmEvent]:
        """Stream the assistant's next message: text deltas as they come, then any tool calls.

        The engine may stop iterating at any time (barge-in, speculation dropped); implementations
        must release their request when the iterator is closed (`aclose`).
        """
        ...


class TextToSpeech(Protocol):
    def synthesize(self, text: str, *, voice: Voice, language: str) -> AsyncIterator[bytes]:
        """PCM16 8 kHz audio for `text`, in chunks of any size, forwarded as the provider produces them."""
        ...


@dataclass(frozen=True, slots=True)
class CallProviders:
    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech


class Providers(Protocol):
    """Chooses the providers for one call, from the agent and the stream's custom parameters."""

    def for_call(self, agent: AgentConfig, parameters: Mapping[str, str]) -> CallProviders: ...
