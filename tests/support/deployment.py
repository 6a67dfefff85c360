"""The whole platform on this machine, without an AWS or Twilio account: for `make demo`, the e2e tests and
the latency benchmark.

What runs, and as what:
- AWS: moto's server on a free port (DynamoDB, Secrets Manager, EventBridge, Scheduler), reached through
  AWS_ENDPOINT_URL by the same boto3 code that runs in the account;
- Twilio REST: the local stub (twilio_stub.py) through the real twilio client;
- Redis: a redis-server of our own;
- the Lambda functions: their real handlers, invoked with API Gateway events, off the event loop as Lambda
  would run them, with Twilio's requests signed by twilio's RequestValidator;
- the media server: the real app under uvicorn, with the real call engine and simulated providers (or the
  offline engines, pocketsphinx, eSpeak NG and the scripted LLM, with the caller's lines spoken by eSpeak);
- Twilio's side of the call: the call simulator, connecting to the <Stream> the voice webhook answered with.
"""

import asyncio
import contextlib
import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import redis.asyncio as aioredis
import uvicorn
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

from streaming.call import CallEngine, EngineDeps
from streaming.knowledge import load_knowledge
from streaming.providers.base import Providers
from streaming.providers.choice import AgentProviders, ProviderKeys, ProviderMode, build_agent_providers
from streaming.providers.simulated import LatencyProfile, SimulatedProviders
from streaming.server import Engine, MediaServerApp, Services
from streaming.simulator import CallReport, run_call, shipped_scenarios
from streaming.simulator.scenario import Scenario
from streaming.simulator.voice import CallerVoice
from streaming.telemetry import TurnReport
from switchboard.agent import AgentConfig, AgentDirectory
from switchboard.booking import appointments_table_definition
from switchboard.records import CallRecords, table_definition
from switchboard.state import CallStateStore
from switchboard.stream_token import StreamTokenSigner
from switchboard.tool import ToolOutcome, ToolResult
from switchboard.tool_actions import idempotency_table_definition, tool_schemas
from switchboard.twilio_signature import TwilioSignature
from tests.support.apigw import LambdaContext, json_event, response_json, rest_event, twilio_form_event
from tests.support.moto_server import running_moto_thread
from tests.support.net import free_port
from tests.support.redis_server import running_redis_server
from tests.support.twilio_stub import ACCOUNT_SID, AUTH_TOKEN, TwilioStub, running_twilio_stub

REPO = Path(__file__).resolve().parent.parent.parent
PUBLIC_API_URL = "https://api.switchboard.test/prod"
PUBLIC_STREAM_URL = "wss://media.switchboard.test/media"
REGION = "us-east-1"
CALLS_TABLE = "switchboard-calls"
APPOINTMENTS_TABLE = "switchboard-appointments"
IDEMPOTENCY_TABLE = "switchboard-idempotency"
EVENT_BUS = "switchboard"
SCHEDULE_GROUP = "switchboard"
TOOLS_CALLER_ARN = "arn:aws:sts::123456789012:assumed-role/switchboard-streaming/task"
CALLER_NUMBER = "+15550101234"

_HANDLERS = {
    "voice": "functions.voice_webhook.handler",
    "status": "functions.status_callback.handler",
    "tools": "functions.tool_actions.handler",
    "dialer": "functions.dialer.handler",
}


class DeploymentError(RuntimeError):
    """A step of the local call did not go as Twilio or the platform would have it go."""


@dataclass
class LocalCall:
    call_sid: str
    scenario: str
    report: CallReport
    timeline: dict[str, Any]
    turns: list[TurnReport]
    twiml: list[str] = field(default_factory=list)


def _parameters_of(twiml: str) -> dict[str, str]:
    """The <Parameter>s of the <Connect><Stream> in a TwiML answer; DeploymentError when it is not one."""
    root = ET.fromstring(twiml)  # noqa: S314 - our own handler's output, not untrusted XML
    stream = root.find("./Connect/Stream")
    if stream is None:
        raise DeploymentError(f"the answer does not connect a stream: {twiml}")
    if stream.get("url") != PUBLIC_STREAM_URL:
        raise DeploymentError(f"the stream URL is {stream.get('url')!r}, not {PUBLIC_STREAM_URL}")
    return {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}


def platform_environment(aws_url: str, twilio_api_url: str) -> dict[str, str]:
    """The settings every deployable reads, for this machine (the secrets' ARNs come from create_aws_resources)."""
    return {
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_SESSION_TOKEN": "local",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": aws_url,
        "CALLS_TABLE": CALLS_TABLE,
        "APPOINTMENTS_TABLE": APPOINTMENTS_TABLE,
        "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
        "AGENTS_DIR": str(REPO / "agents"),
        "PUBLIC_API_URL": PUBLIC_API_URL,
        "PUBLIC_STREAM_URL": PUBLIC_STREAM_URL,
        "EVENT_BUS_NAME": EVENT_BUS,
        "SCHEDULE_GROUP": SCHEDULE_GROUP,
        "SCHEDULER_ROLE_ARN": "arn:aws:iam::123456789012:role/switchboard-scheduler",
        "DIALER_FUNCTION_ARN": f"arn:aws:lambda:{REGION}:123456789012:function:switchboard-dialer",
        "TWILIO_API_BASE_URL": twilio_api_url,
        "POWERTOOLS_METRICS_NAMESPACE": "Switchboard",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


def create_aws_resources(token_key: str) -> dict[str, str]:
    """Tables, secrets, the event bus and the schedule group, on the AWS that boto3 reaches now.

    Returns the settings naming the secrets (TWILIO_SECRET_ARN, STREAM_TOKEN_SECRET_ARN)."""
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(**table_definition(CALLS_TABLE))
    dynamodb.create_table(**appointments_table_definition(APPOINTMENTS_TABLE))
    dynamodb.create_table(**idempotency_table_definition(IDEMPOTENCY_TABLE))
    secrets = boto3.client("secretsmanager")
    twilio_secret = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}
    arns = {
        "TWILIO_SECRET_ARN": secrets.create_secret(Name="switchboard/twilio", SecretString=json.dumps(twilio_secret))[
            "ARN"
        ],
        "STREAM_TOKEN_SECRET_ARN": secrets.create_secret(Name="switchboard/stream-token-key", SecretString=token_key)[
            "ARN"
        ],
    }
    boto3.client("events").create_event_bus(Name=EVENT_BUS)
    boto3.client("scheduler").create_schedule_group(Name=SCHEDULE_GROUP)
    return arns


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `values` set, restored on exit (the handlers read their settings from it)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _LambdaTools:
    """ToolActions for the engine that goes through the real tool-actions handler, as SigV4 via API Gateway."""

    def __init__(self, deployment: "LocalDeployment") -> None:
        self._deployment = deployment

    def schemas(self, agent: AgentConfig) -> list[dict[str, Any]]:
        return tool_schemas(agent)

    async def invoke(self, call_sid: str, tool: str, arguments: Mapping[str, Any]) -> ToolResult:
        event = json_event(
            "POST",
            f"/tools/{tool}",
            {"call_sid": call_sid, "arguments": dict(arguments)},
            resource="/tools/{name}",
            path_parameters={"name": tool},
            iam_user_arn=TOOLS_CALLER_ARN,
        )
        response = await self._deployment.invoke("tools", event)
        if response["statusCode"] != 200:
            return ToolResult.model_validate(
                {"tool": tool, "outcome": ToolOutcome.FAILED, "message": f"The {tool} action is not available."}
            )
        return ToolResult.model_validate(response_json(response))


# The eSpeak voice and rate pocketsphinx hears best over a phone line (tests/integration/test_offline_engines.py).
OFFLINE_CALLER_VOICE = "en-us+f2"
OFFLINE_CALLER_WORDS_PER_MINUTE = 140


async def offline_providers() -> AgentProviders:
    """Every shipped agent on the offline engines (pocketsphinx, eSpeak NG, its scripted flow)."""
    agents = AgentDirectory.load(REPO / "agents")
    return await build_agent_providers(agents, ProviderMode.OFFLINE, ProviderKeys(region="us-east-1"))


def offline_caller_voice(text: str) -> bytes:
    """The caller's lines spoken by eSpeak NG (PCM16 8 kHz), for a speech-to-text that hears audio."""
    from streaming.providers.espeak import speech_8khz

    return speech_8khz(text, OFFLINE_CALLER_VOICE, words_per_minute=OFFLINE_CALLER_WORDS_PER_MINUTE)


class LocalDeployment:
    """Start with `async with LocalDeployment(...) as deployment`, then place calls with `inbound_call`."""

    def __init__(
        self,
        *,
        profile: LatencyProfile,
        scenarios: Mapping[str, Scenario] | None = None,
        providers: Providers | None = None,
        caller_voice: CallerVoice | None = None,
    ) -> None:
        """Simulated providers with `profile`, unless `providers` are given (the offline engines, whose
        speech-to-text hears audio: then `caller_voice` speaks the scenarios' caller lines)."""
        self.profile = profile
        self.scenarios = dict(scenarios) if scenarios is not None else shipped_scenarios()
        self.providers: Providers = providers or SimulatedProviders(self.scenarios, profile)
        self.caller_voice = caller_voice
        self.turn_reports: list[TurnReport] = []
        self.twilio: TwilioStub
        self._stack = contextlib.AsyncExitStack()
        self._handlers: dict[str, ModuleType] = {}
        self._media_url = ""

    async def __aenter__(self) -> "LocalDeployment":
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        stack = self._stack
        redis_url = stack.enter_context(running_redis_server())
        self.twilio = stack.enter_context(running_twilio_stub())
        aws_url = stack.enter_context(running_moto_thread())
        stack.enter_context(environment(platform_environment(aws_url, self.twilio.url)))
        # Random per deployment: no token signed here is valid anywhere else.
        token_key = os.urandom(32).hex()
        stack.enter_context(environment(create_aws_resources(token_key)))
        self._load_handlers()
        stack.callback(self._forget_handler_state)

        redis = aioredis.Redis.from_url(redis_url)
        stack.push_async_callback(redis.aclose)
        agents = AgentDirectory.load(REPO / "agents")
        deps = EngineDeps(
            agents=agents,
            providers=self.providers,
            tools=_LambdaTools(self),
            store=CallStateStore(redis),
            records=CallRecords(CALLS_TABLE),
            owner="local-media-server",
            on_turn=self.turn_reports.append,
            knowledge=load_knowledge(agents),
        )
        self._services = Services(
            signature=TwilioSignature(AUTH_TOKEN, public_stream_url=PUBLIC_STREAM_URL),
            tokens=StreamTokenSigner(token_key.encode("utf-8")),
            redis=redis,
            engine_factory=lambda: CallEngine(deps),
            drain_seconds=5,
        )
        self._media_url = await self.start_media_server(self._services.engine_factory)

    async def start_media_server(self, engine_factory: Callable[[], Engine]) -> str:
        """Another media server (same auth, another engine: the benchmark's sequential baseline); its URL."""
        services = dataclasses.replace(self._services, engine_factory=engine_factory)
        port = free_port()
        config = uvicorn.Config(
            MediaServerApp(services), host="127.0.0.1", port=port, ws="websockets-sansio", log_level="warning"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())

        async def stop_server() -> None:
            server.should_exit = True
            await task

        self._stack.push_async_callback(stop_server)
        while not server.started:
            if task.done():
                task.result()
                raise DeploymentError("the media server stopped while starting")
            await asyncio.sleep(0.02)
        return f"ws://127.0.0.1:{port}/media"

    def _load_handlers(self) -> None:
        import importlib

        for name, module_name in _HANDLERS.items():
            module = importlib.import_module(module_name)
            module.dependencies.cache_clear()
            self._handlers[name] = module
        self._forget_handler_state()

    def _forget_handler_state(self) -> None:
        for module in self._handlers.values():
            module.dependencies.cache_clear()
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        # Powertools keeps one provider (and its boto3 client, bound to an endpoint) per process.
        DEFAULT_PROVIDERS.clear()

    async def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        """Run a function's handler with an API Gateway event, off the loop as Lambda runs it."""
        handler = self._handlers[function].lambda_handler
        response: dict[str, Any] = await asyncio.to_thread(handler, event, LambdaContext())
        return response

    async def twilio_webhook(
        self, function: str, path: str, form: dict[str, str], query: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """POST a webhook as Twilio does: form-encoded, signed over the public URL."""
        event = twilio_form_event(path, form, auth_token=AUTH_TOKEN, public_url=PUBLIC_API_URL + path, query=query)
        return await self.invoke(function, event)

    async def _status(self, call_sid: str, to: str, status: str, sequence: int, **extra: str) -> None:
        form = {
            "AccountSid": ACCOUNT_SID,
            "CallSid": call_sid,
            "From": CALLER_NUMBER,
            "To": to,
            "Direction": "inbound",
            "CallStatus": status,
            "SequenceNumber": str(sequence),
            "Timestamp": datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
            "ApiVersion": "2010-04-01",
            **extra,
        }
        response = await self.twilio_webhook("status", "/twilio/status", form)
        if response["statusCode"] != 200:
            raise DeploymentError(f"status callback {status} answered {response['statusCode']}: {response['body']}")

    async def inbound_call(
        self, scenario: str, *, speed: float = 1.0, call_sid: str | None = None, media_url: str | None = None
    ) -> LocalCall:
        """One inbound call of `scenario`, end to end; returns what the caller heard and what was recorded."""
        sid = call_sid or "CA" + os.urandom(16).hex()
        script = self.scenarios[scenario]
        agents = AgentDirectory.load(REPO / "agents")
        agent = agents.get(script.agent)
        if agent is None or not agent.phone_numbers:
            raise DeploymentError(f"scenario {scenario} names agent {script.agent!r}, which answers no number")
        to = agent.phone_numbers[0]
        base_form = {
            "AccountSid": ACCOUNT_SID,
            "CallSid": sid,
            "From": CALLER_NUMBER,
            "To": to,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        started = datetime.now(UTC)
        twiml: list[str] = []
        # Twilio asks the voice webhook what to do, then reports the call answered.
        answer = await self.twilio_webhook("voice", "/twilio/voice", {**base_form, "CallStatus": "ringing"})
        twiml.append(answer["body"])
        stream_parameters = _parameters_of(answer["body"])
        await self._status(sid, to, "in-progress", 1)

        async def resume() -> dict[str, str]:
            ended = await self.twilio_webhook(
                "voice", "/twilio/stream-ended", {**base_form, "CallStatus": "in-progress", "StreamSid": "MZ0"}
            )
            twiml.append(ended["body"])
            return {**_parameters_of(ended["body"]), "scenario": scenario}

        report = await run_call(
            media_url or self._media_url,
            public_stream_url=PUBLIC_STREAM_URL,
            auth_token=AUTH_TOKEN,
            call_sid=sid,
            parameters={**stream_parameters, "scenario": scenario},
            scenario=script,
            speed=speed,
            resume_parameters=resume,
            voice=self.caller_voice,
        )
        if report.ended_by == "agent":
            # We closed the stream: Twilio asks the <Connect action> what next (a hang-up, the call being over).
            ended = await self.twilio_webhook(
                "voice", "/twilio/stream-ended", {**base_form, "CallStatus": "in-progress", "StreamSid": "MZ0"}
            )
            twiml.append(ended["body"])
        # The caller hung up, or the agent's <Hangup/> ran: Twilio reports the call completed.
        duration = max(1, round((datetime.now(UTC) - started).total_seconds()))
        await self._status(sid, to, "completed", 2, CallDuration=str(duration))
        timeline = await self.invoke(
            "dialer",
            rest_event(
                "GET",
                f"/calls/{sid}",
                resource="/calls/{sid}",
                path_parameters={"sid": sid},
                iam_user_arn=TOOLS_CALLER_ARN,
            ),
        )
        if timeline["statusCode"] != 200:
            raise DeploymentError(f"GET /calls/{sid} answered {timeline['statusCode']}: {timeline['body']}")
        turns = [turn for turn in self.turn_reports if turn.call_sid == sid]
        return LocalCall(sid, scenario, report, response_json(timeline), turns, twiml)

    def records(self) -> CallRecords:
        return CallRecords(CALLS_TABLE)
