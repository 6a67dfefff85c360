"""`python -m streaming`: the media server, as the container runs it.

Everything a call needs is built once at start, and anything wrong (a missing variable, an unreadable
secret, a bad agent file, Redis out of reach) stops the process there with a message naming it, rather
than failing the first call. The call engine and the providers are imported when the services are built,
not when this module is.
"""

import asyncio
import json
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError
from botocore.exceptions import BotoCoreError
from pydantic import BaseModel, Field, SecretStr, ValidationError
from uvicorn.loops.auto import auto_loop_factory

from streaming.knowledge import KnowledgeBase, load_knowledge
from streaming.phrases import PhraseStore, warm_agents
from streaming.providers.base import Providers
from streaming.providers.choice import (
    AgentProviders,
    ProviderError,
    ProviderKeys,
    ProviderMode,
    build_agent_providers,
)
from streaming.server import Engine, Services, create_app
from streaming.serving import MediaServer, uvicorn_config
from streaming.tool_client import SignedToolActions
from streaming.tools import ToolActions
from switchboard.agent import AgentConfigError, AgentDirectory
from switchboard.events import CallEvents
from switchboard.observability import logger
from switchboard.records import CallRecords
from switchboard.settings import SettingsError, StreamingSettings, load_settings
from switchboard.state import CallStateStore
from switchboard.stream_token import StreamTokenSigner
from switchboard.twilio_rest import SECRET_MAX_AGE_S, load_twilio_credentials
from switchboard.twilio_signature import TwilioSignature

# Redis is on the critical path of every call start: fail a command quickly rather than hang a call.
REDIS_TIMEOUT_S = 2.0
EXIT_BAD_CONFIGURATION = 2
# What marks the OpenAI key's secret as holding no key yet: the whole value, or a key of a JSON object
# (the CDK stack generates {"unset": ..., "placeholder": ...} once, so a later deploy never resets it).
OPENAI_KEY_UNSET = "unset"


class StartupError(RuntimeError):
    """The service cannot start as configured. The message says what to fix."""


@dataclass(frozen=True, slots=True)
class MediaService:
    """The services of the app, and what must be closed once the server has stopped."""

    settings: StreamingSettings
    services: Services
    tools: SignedToolActions
    providers: Providers

    async def aclose(self) -> None:
        if isinstance(self.providers, AgentProviders):
            await self.providers.aclose()
        await self.tools.aclose()
        await self.services.redis.aclose()


async def build(settings: StreamingSettings) -> MediaService:
    """Everything a call needs, checked; in the loop that will serve (provider clients bind to it)."""
    twilio = _secret("TWILIO_SECRET_ARN", lambda: load_twilio_credentials(settings.twilio_secret_arn))
    token_key = _secret(
        "STREAM_TOKEN_SECRET_ARN",
        lambda: str(parameters.get_secret(settings.stream_token_secret_arn, max_age=SECRET_MAX_AGE_S)),
    )
    try:
        signature = TwilioSignature(
            twilio.auth_token.get_secret_value(), public_stream_url=str(settings.public_stream_url)
        )
        # The voice webhook signs with the same secret's UTF-8 bytes.
        tokens = StreamTokenSigner(token_key.encode("utf-8"))
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    try:
        agents = AgentDirectory.load(settings.agents_dir)
    except AgentConfigError as exc:
        raise StartupError(f"AGENTS_DIR: {exc}") from exc
    try:
        knowledge = load_knowledge(agents)
    except (OSError, ValueError) as exc:
        raise StartupError(f"knowledge base: {exc}") from exc
    providers = await _providers(settings, agents)
    redis = _redis(settings)
    try:
        tools = _tool_actions(settings)
    except StartupError:
        await redis.aclose()
        if isinstance(providers, AgentProviders):
            await providers.aclose()
        raise
    # Shared with every task of the deployment through Redis: a new task reads the phrases, not Polly.
    phrase_store = PhraseStore(redis=redis)
    if isinstance(providers, AgentProviders):
        await _warm_phrases(agents, providers, phrase_store)
    engine_factory = _engine_factory(
        agents=agents,
        providers=providers,
        tools=tools,
        store=CallStateStore(redis),
        records=CallRecords(settings.calls_table),
        events=CallEvents(settings.event_bus_name) if settings.event_bus_name else None,
        owner=f"{socket.gethostname()}:{os.getpid()}",
        knowledge=knowledge,
        phrase_store=phrase_store,
    )
    services = Services(
        signature=signature,
        tokens=tokens,
        redis=redis,
        engine_factory=engine_factory,
        drain_seconds=settings.drain_seconds,
    )
    return MediaService(settings, services, tools, providers)


class RedisAuth(BaseModel):
    """The cache user's credentials, from their secret."""

    username: str = Field(min_length=1)
    password: SecretStr = Field(min_length=1)


def _redis(settings: StreamingSettings) -> aioredis.Redis:
    auth: RedisAuth | None = None
    if (arn := settings.redis_auth_secret_arn) is not None:
        auth = _secret(
            "REDIS_AUTH_SECRET_ARN",
            lambda: RedisAuth.model_validate(parameters.get_secret(arn, transform="json", max_age=SECRET_MAX_AGE_S)),
        )
    return aioredis.Redis.from_url(
        str(settings.redis_url),
        username=auth.username if auth else None,
        password=auth.password.get_secret_value() if auth else None,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
    )


async def _warm_phrases(agents: AgentDirectory, providers: AgentProviders, store: PhraseStore) -> None:
    """Every agent's greeting, fillers, reprompt and goodbye ready before the first call. A phrase that fails
    here is synthesized when a call needs it: a start is not refused for it."""
    report = await warm_agents(agents, lambda agent: providers.by_agent[agent.id].tts, store)
    if report.failed:
        logger.warning("some phrases could not be synthesized at start", extra=asdict(report))
    else:
        logger.info("phrases ready", extra=asdict(report))


def _secret[T](variable: str, read: Callable[[], T]) -> T:
    try:
        return read()
    except (GetParameterError, TransformParameterError, BotoCoreError, ValidationError) as exc:
        raise StartupError(f"{variable}: cannot read the secret: {exc}") from exc


def openai_key_of(secret: str) -> str | None:
    """The OpenAI key a secret holds, or None while it holds what the stack put there (or nothing)."""
    value = secret.strip()
    if not value or value == OPENAI_KEY_UNSET:
        return None
    if value.startswith("{"):
        try:
            marker = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(marker, dict) and OPENAI_KEY_UNSET in marker:
            return None
    return value


async def _providers(settings: StreamingSettings, agents: AgentDirectory) -> Providers:
    mode = ProviderMode(settings.providers)
    if mode is ProviderMode.SIMULATED:
        from streaming.providers.simulated import LatencyProfile, SimulatedProviders
        from streaming.simulator import shipped_scenarios

        logger.warning("SWITCHBOARD_PROVIDERS=simulated: calls follow the simulator's scenarios, not callers")
        return SimulatedProviders(shipped_scenarios(), LatencyProfile.reference())
    openai_key = None
    if mode is ProviderMode.AGENTS and settings.openai_secret_arn is not None:
        arn = settings.openai_secret_arn
        openai_key = openai_key_of(
            _secret("OPENAI_SECRET_ARN", lambda: str(parameters.get_secret(arn, max_age=SECRET_MAX_AGE_S)))
        )
    keys = ProviderKeys(
        region=settings.aws_region,
        openai_api_key=openai_key,
        openai_base_url=str(settings.openai_base_url) if settings.openai_base_url else None,
    )
    try:
        return await build_agent_providers(agents, mode, keys)
    except ProviderError as exc:
        raise StartupError(f"SWITCHBOARD_PROVIDERS={mode.value}: {exc}") from exc


def _tool_actions(settings: StreamingSettings) -> SignedToolActions:
    from switchboard.tool_actions import tool_schemas

    try:
        return SignedToolActions(str(settings.tools_api_url), settings.aws_region, tool_schemas)
    except ValueError as exc:
        raise StartupError(f"tool actions: {exc}") from exc


def _engine_factory(
    *,
    agents: AgentDirectory,
    providers: Providers,
    tools: ToolActions,
    store: CallStateStore,
    records: CallRecords,
    events: CallEvents | None,
    owner: str,
    knowledge: Mapping[str, KnowledgeBase],
    phrase_store: PhraseStore,
) -> Callable[[], Engine]:
    from streaming.call import CallEngine, EngineDeps

    deps = EngineDeps(
        agents=agents,
        providers=providers,
        tools=tools,
        store=store,
        records=records,
        events=events,
        owner=owner,
        knowledge=knowledge,
        phrase_store=phrase_store,
    )
    return lambda: CallEngine(deps)


async def serve(settings: StreamingSettings) -> int:
    try:
        service = await build(settings)
    except StartupError as exc:
        print(f"switchboard media server: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIGURATION
    try:
        app = create_app(service.services)
        await MediaServer(uvicorn_config(app, port=settings.port), app).serve()
    finally:
        await service.aclose()
    return 0


def main() -> int:
    try:
        settings = load_settings(StreamingSettings)
    except SettingsError as exc:
        print(f"switchboard media server: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIGURATION
    # uvloop when installed (uvicorn[standard] brings it): less CPU per frame, more calls per vCPU. The
    # loop is uvicorn's "auto" choice, made before the app exists: the providers are built in it.
    return asyncio.run(serve(settings), loop_factory=auto_loop_factory())


if __name__ == "__main__":
    sys.exit(main())
