"""`python -m streaming`: the media server, as the container runs it.

Everything a call needs is built once at start, and anything wrong (a missing variable, an unreadable
secret, a bad agent file, Redis out of reach) stops the process there with a message naming it, rather
than failing the first call. The call engine and the providers are imported when the services are built,
not when this module is.
"""

import asyncio
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError
from botocore.exceptions import BotoCoreError
from pydantic import ValidationError

from streaming.providers.base import Providers
from streaming.server import Engine, Services, create_app
from streaming.serving import MediaServer, uvicorn_config
from streaming.tool_client import SignedToolActions
from streaming.tools import ToolActions
from switchboard.agent import AgentConfigError, AgentDirectory
from switchboard.events import CallEvents
from switchboard.records import CallRecords
from switchboard.settings import SettingsError, StreamingSettings, load_settings
from switchboard.state import CallStateStore
from switchboard.stream_token import StreamTokenSigner
from switchboard.twilio_rest import SECRET_MAX_AGE_S, load_twilio_credentials
from switchboard.twilio_signature import TwilioSignature

# Which speech, language and voice providers the calls use. Only "simulated" exists until the AWS and
# OpenAI ones land; it has no default so that a deployment never runs on simulated providers by accident.
PROVIDERS_VARIABLE = "SWITCHBOARD_PROVIDERS"
AVAILABLE_PROVIDERS = ("simulated",)
# Redis is on the critical path of every call start: fail a command quickly rather than hang a call.
REDIS_TIMEOUT_S = 2.0
EXIT_BAD_CONFIGURATION = 2


class StartupError(RuntimeError):
    """The service cannot start as configured. The message says what to fix."""


@dataclass(frozen=True, slots=True)
class MediaService:
    """The services of the app, and what must be closed once the server has stopped."""

    settings: StreamingSettings
    services: Services
    tools: SignedToolActions

    async def aclose(self) -> None:
        await self.tools.aclose()
        await self.services.redis.aclose()


def build(settings: StreamingSettings) -> MediaService:
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
    providers = _providers()
    redis = aioredis.Redis.from_url(
        str(settings.redis_url), socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )
    tools = _tool_actions(settings)
    engine_factory = _engine_factory(
        agents=agents,
        providers=providers,
        tools=tools,
        store=CallStateStore(redis),
        records=CallRecords(settings.calls_table),
        events=CallEvents(settings.event_bus_name) if settings.event_bus_name else None,
        owner=f"{socket.gethostname()}:{os.getpid()}",
    )
    services = Services(
        signature=signature,
        tokens=tokens,
        redis=redis,
        engine_factory=engine_factory,
        drain_seconds=settings.drain_seconds,
    )
    return MediaService(settings, services, tools)


def _secret[T](variable: str, read: Callable[[], T]) -> T:
    try:
        return read()
    except (GetParameterError, TransformParameterError, BotoCoreError, ValidationError) as exc:
        raise StartupError(f"{variable}: cannot read the secret: {exc}") from exc


def _providers() -> Providers:
    choice = os.environ.get(PROVIDERS_VARIABLE)
    if choice not in AVAILABLE_PROVIDERS:
        found = "is not set" if choice is None else f"is {choice!r}"
        available = ", ".join(AVAILABLE_PROVIDERS)
        raise StartupError(f"{PROVIDERS_VARIABLE} {found}: the providers available are {available}")
    from streaming.providers.simulated import LatencyProfile, SimulatedProviders
    from streaming.simulator import shipped_scenarios

    return SimulatedProviders(shipped_scenarios(), LatencyProfile.reference())


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
) -> Callable[[], Engine]:
    from streaming.call import CallEngine, EngineDeps

    deps = EngineDeps(
        agents=agents, providers=providers, tools=tools, store=store, records=records, events=events, owner=owner
    )
    return lambda: CallEngine(deps)


async def serve(server: MediaServer, service: MediaService) -> None:
    try:
        await server.serve()
    finally:
        await service.aclose()


def main() -> int:
    try:
        service = build(load_settings(StreamingSettings))
    except (SettingsError, StartupError) as exc:
        print(f"switchboard media server: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIGURATION
    app = create_app(service.services)
    config = uvicorn_config(app, port=service.settings.port)
    # uvloop when installed (uvicorn[standard] brings it): less CPU per frame, more calls per vCPU.
    asyncio.run(serve(MediaServer(config, app), service), loop_factory=config.get_loop_factory())
    return 0


if __name__ == "__main__":
    sys.exit(main())
