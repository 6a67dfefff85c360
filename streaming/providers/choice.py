"""Which speech, language and voice providers each agent's calls use: built once at start, checked there.

SWITCHBOARD_PROVIDERS chooses:
- "agents" (the default, what a deployment runs): each agent's own choice, `listening.provider`
  (transcribe | pocketsphinx), `voice.provider` (polly | espeak) and `llm.provider` (openai | bedrock |
  scripted). An agent on OpenAI while no OpenAI key is configured runs on its scripted flow instead, and
  the start says so for each such agent: a deployment without a key still answers its calls, but that flow
  does not act for its callers (no bookings, no SMS: scripted.py).
- "offline": every agent on pocketsphinx, eSpeak NG and its scripted flow: no account, no network.
- "simulated": the scripted scenarios of the simulator (tests and benchmarks), built in __main__.

Anything a provider needs is checked here, so that a call never finds out: AWS credentials and region
(Transcribe, Polly, Bedrock), each Polly voice supporting its agent's engine and language, each eSpeak
voice existing, the offline engines' packages being installed. A failure is a ProviderError whose
message names the agent, the provider and what to do.

One instance of each provider serves every call of the process (their clients pool connections); the
language models are per agent, since they carry the agent's model, temperature and token limit.
"""

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import boto3

from streaming.providers.base import CallProviders, LanguageModel, SpeechToText, TextToSpeech
from switchboard.agent import AgentConfig
from switchboard.observability import logger


class ProviderMode(StrEnum):
    AGENTS = "agents"
    OFFLINE = "offline"
    SIMULATED = "simulated"


class ProviderError(RuntimeError):
    """A chosen provider cannot work here. The message says which, for which agent, and what to do."""


@dataclass(frozen=True, slots=True)
class ProviderKeys:
    """What the real providers are reached with; the secrets themselves come from Secrets Manager."""

    region: str
    openai_api_key: str | None = None
    # Any OpenAI-compatible server (a proxy, vLLM, Ollama); None is OpenAI's own API.
    openai_base_url: str | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    """The providers one agent's calls use."""

    stt: str
    tts: str
    llm: str


def choose(agent: AgentConfig, mode: ProviderMode, *, openai_key: bool) -> Choice:
    if mode is ProviderMode.OFFLINE:
        return Choice("pocketsphinx", "espeak", "scripted")
    if mode is not ProviderMode.AGENTS:
        raise ValueError(f"providers for {mode.value!r} calls are not chosen per agent")
    llm = agent.llm.provider
    if llm == "openai" and not openai_key:
        llm = "scripted"
    return Choice(agent.listening.provider, agent.voice.provider, llm)


@dataclass
class AgentProviders:
    """Providers.for_call: each agent's providers, built at start. `aclose()` when the service stops."""

    by_agent: Mapping[str, CallProviders]
    choices: Mapping[str, Choice]
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def for_call(self, agent: AgentConfig, parameters: Mapping[str, str]) -> CallProviders:
        providers = self.by_agent.get(agent.id)
        if providers is None:
            raise LookupError(f"no providers were built for agent {agent.id!r}: it was not deployed at start")
        return providers

    async def aclose(self) -> None:
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:
                logger.exception("a provider did not close cleanly")


def _offline_module(name: str) -> Any:
    """An offline engine's module; a clear error when its package (the `offline` group) is missing."""
    try:
        return importlib.import_module(f"streaming.providers.{name}")
    except ImportError as exc:
        raise ProviderError(
            f"the offline engine {name} cannot load ({exc}): install the offline engines with "
            "`uv sync --group offline` (they are not in the service image)"
        ) from exc


def _check_aws(provider: str, agents: list[str], region: str) -> None:
    if boto3.Session().get_credentials() is None:
        raise ProviderError(
            f"{provider} (agents: {', '.join(agents)}) needs AWS credentials, and none were found "
            "(the task role on Fargate; AWS_PROFILE or AWS_ACCESS_KEY_ID locally)"
        )
    if not region:
        raise ProviderError(f"{provider} (agents: {', '.join(agents)}) needs an AWS region: set AWS_REGION")


async def build_agent_providers(
    agents: Iterable[AgentConfig], mode: ProviderMode, keys: ProviderKeys
) -> AgentProviders:
    """Every agent's providers for `mode` ("agents" or "offline"), checked. Raises ProviderError."""
    agents = list(agents)
    choices = {agent.id: choose(agent, mode, openai_key=keys.openai_api_key is not None) for agent in agents}
    closers: list[Callable[[], Awaitable[None]]] = []
    built = AgentProviders({}, choices, closers)
    try:
        by_agent = await _build(agents, mode, choices, keys, closers)
    except BaseException:
        await built.aclose()
        raise
    for agent in agents:
        if mode is ProviderMode.AGENTS and agent.llm.provider == "openai" and choices[agent.id].llm == "scripted":
            logger.warning(
                "no OpenAI key is configured (OPENAI_SECRET_ARN): this agent answers with its scripted flow, "
                "without the tools that act for callers",
                extra={"agent_id": agent.id},
            )
    logger.info(
        "providers ready",
        extra={"mode": mode.value, "agents": {agent_id: asdict(choice) for agent_id, choice in choices.items()}},
    )
    return AgentProviders(by_agent, choices, closers)


async def _build(
    agents: list[AgentConfig],
    mode: ProviderMode,
    choices: Mapping[str, Choice],
    keys: ProviderKeys,
    closers: list[Callable[[], Awaitable[None]]],
) -> dict[str, CallProviders]:
    def using(kind: str, name: str) -> list[AgentConfig]:
        return [agent for agent in agents if getattr(choices[agent.id], kind) == name]

    stt: dict[str, SpeechToText] = {}
    if names := [agent.id for agent in using("stt", "transcribe")]:
        from streaming.providers.transcribe import TranscribeError, TranscribeSpeechToText

        try:  # create() checks the region and the credentials itself
            transcribe = await TranscribeSpeechToText.create(region=keys.region)
        except TranscribeError as exc:
            raise ProviderError(f"Amazon Transcribe (agents: {', '.join(names)}): {exc}") from exc
        closers.append(transcribe.aclose)
        stt["transcribe"] = transcribe
    if using("stt", "pocketsphinx"):
        stt["pocketsphinx"] = _offline_module("pocketsphinx").PocketsphinxSpeechToText()

    tts: dict[str, TextToSpeech] = {}
    if polly_agents := using("tts", "polly"):
        from streaming.providers.polly import PollyTextToSpeech, VoiceCheckError, polly_client

        _check_aws("Amazon Polly", [agent.id for agent in polly_agents], keys.region)
        polly = PollyTextToSpeech(polly_client(keys.region))
        closers.append(polly.aclose)
        try:
            await polly.check_voices(polly_agents)
        except VoiceCheckError as exc:
            raise ProviderError(str(exc)) from exc
        tts["polly"] = polly
    if espeak_agents := using("tts", "espeak"):
        espeak_module = _offline_module("espeak")
        espeak = espeak_module.EspeakTextToSpeech()
        closers.append(espeak.aclose)
        for agent in espeak_agents:
            try:
                await espeak.voice_name(agent.voice, agent.language)
            except espeak_module.EspeakError as exc:
                raise ProviderError(f"agent {agent.id}: {exc}") from exc
        tts["espeak"] = espeak

    llms: dict[str, LanguageModel] = {}
    if openai_agents := using("llm", "openai"):
        from streaming.providers.openai_llm import OpenAILanguageModel, openai_client

        assert keys.openai_api_key is not None  # choose() gives openai only with a key
        client = openai_client(keys.openai_api_key, base_url=keys.openai_base_url)
        closers.append(client.close)
        for agent in openai_agents:
            llms[agent.id] = OpenAILanguageModel(client, agent.llm)
    if bedrock_agents := using("llm", "bedrock"):
        from streaming.providers.bedrock import BedrockLanguageModel, bedrock_runtime_client

        _check_aws("Amazon Bedrock", [agent.id for agent in bedrock_agents], keys.region)
        bedrock = bedrock_runtime_client(keys.region)

        async def close_bedrock() -> None:
            bedrock.close()

        closers.append(close_bedrock)
        for agent in bedrock_agents:
            llms[agent.id] = BedrockLanguageModel(bedrock, agent.llm)
    if scripted_agents := using("llm", "scripted"):
        from streaming.providers.scripted import ScriptedLanguageModel

        for agent in scripted_agents:
            # A flow chosen on purpose, or the offline mode, acts; one standing in for a missing key does not.
            stands_in = mode is ProviderMode.AGENTS and agent.llm.provider != "scripted"
            llms[agent.id] = ScriptedLanguageModel(agent, acts=not stands_in)

    return {
        agent.id: CallProviders(stt=stt[choices[agent.id].stt], llm=llms[agent.id], tts=tts[choices[agent.id].tts])
        for agent in agents
    }
