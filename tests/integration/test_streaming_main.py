"""`python -m streaming`: everything built from the environment, and a clear stop when it is wrong.

Secrets Manager runs on moto in-process; the built app is then served by real uvicorn with the real
call engine and simulated providers, and answers its health check.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import redis.asyncio as aioredis
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from streaming.__main__ import MediaService, StartupError, build, openai_key_of
from streaming.providers.base import ToolCall
from streaming.providers.choice import AgentProviders, Choice
from streaming.server import create_app
from streaming.serving import MediaServer, uvicorn_config
from switchboard.agent import AgentDirectory
from switchboard.records import table_definition
from switchboard.settings import SettingsError, StreamingSettings, load_settings
from switchboard.state import ChatMessage
from tests.conftest import REPO
from tests.support.net import free_port
from tests.support.twilio_stub import ACCOUNT_SID, AUTH_TOKEN

TABLE = "switchboard-calls"
TOKEN_KEY = "a-stream-token-key-of-at-least-32-characters"


@pytest.fixture
def environment(aws_env: None, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A complete, valid environment for the media server, with its secrets in moto."""
    with mock_aws():
        boto3.client("dynamodb").create_table(**table_definition(TABLE))
        secrets = boto3.client("secretsmanager")
        twilio = secrets.create_secret(
            Name="switchboard/twilio", SecretString=json.dumps({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN})
        )["ARN"]
        token = secrets.create_secret(Name="switchboard/stream-token", SecretString=TOKEN_KEY)["ARN"]
        values = {
            "CALLS_TABLE": TABLE,
            "AGENTS_DIR": str(REPO / "agents"),
            "REDIS_URL": redis_url,
            "PUBLIC_STREAM_URL": "wss://media.example.com/media",
            "TOOLS_API_URL": "https://tools.example.com/prod",
            "TWILIO_SECRET_ARN": twilio,
            "STREAM_TOKEN_SECRET_ARN": token,
            "PORT": str(free_port()),
            "DRAIN_SECONDS": "5",
            "SWITCHBOARD_PROVIDERS": "simulated",
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        yield values
        parameters.clear_caches()  # type: ignore[no-untyped-call]


def settings() -> StreamingSettings:
    return load_settings(StreamingSettings)


async def test_the_built_service_serves_its_health_check(environment: dict[str, str]) -> None:
    service = await build(settings())
    assert isinstance(service, MediaService)
    assert service.services.drain_seconds == 5
    assert service.services.signature.stream_url == "wss://media.example.com/media"
    app = create_app(service.services)
    server = MediaServer(uvicorn_config(app, port=service.settings.port, host="127.0.0.1"), app)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{service.settings.port}/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok", "calls": 0})
        # The engine factory builds the real engine.
        assert type(service.services.engine_factory()).__name__ == "CallEngine"
    finally:
        server.should_exit = True
        await task
        await service.aclose()


async def test_an_unreadable_secret_stops_the_start(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:absent-AbCdEf")
    with pytest.raises(StartupError, match="TWILIO_SECRET_ARN: cannot read the secret"):
        await build(settings())


async def test_a_short_stream_token_key_stops_the_start(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    short = boto3.client("secretsmanager").create_secret(Name="short", SecretString="too short")["ARN"]
    monkeypatch.setenv("STREAM_TOKEN_SECRET_ARN", short)
    with pytest.raises(StartupError, match="at least 32 bytes"):
        await build(settings())


async def test_a_bad_agents_directory_stops_the_start(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENTS_DIR", str(tmp_path))
    with pytest.raises(StartupError, match=r"AGENTS_DIR: .*no agent files"):
        await build(settings())


def test_the_process_exits_naming_every_missing_setting(tmp_path: Path) -> None:
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{REPO / 'layers'}{os.pathsep}{REPO}"}
    finished = subprocess.run(
        [sys.executable, "-m", "streaming"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 2
    for variable in ("AWS_REGION", "CALLS_TABLE", "REDIS_URL", "PUBLIC_STREAM_URL", "STREAM_TOKEN_SECRET_ARN"):
        assert f"{variable}: is not set" in finished.stderr


async def tool_calls(service: MediaService, said: str) -> list[str]:
    """The tools the clinic receptionist's language model calls when a caller says `said`."""
    agent = AgentDirectory.load(REPO / "agents").get("clinic-receptionist")
    assert agent is not None
    llm = service.providers.for_call(agent, {}).llm
    events = [event async for event in llm.reply([ChatMessage(role="user", content=said)], [])]
    return [event.name for event in events if isinstance(event, ToolCall)]


# -- providers ----------------------------------------------------------------------------------------------


async def test_by_default_each_agent_runs_on_its_own_providers(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Transcribe and Polly (voices checked against Polly, on moto), and without an OpenAI key the agents'
    scripted flows, said at start; the fixed phrases are warmed into Redis."""
    monkeypatch.delenv("SWITCHBOARD_PROVIDERS")
    service = await build(settings())
    try:
        assert isinstance(service.providers, AgentProviders)
        on_aws = Choice(stt="transcribe", tts="polly", llm="scripted")
        assert service.providers.choices == {"appointment-reminder": on_aws, "clinic-receptionist": on_aws}
        said = caplog.messages
        assert sum("no OpenAI key is configured" in message for message in said) == 2
        assert "phrases ready" in said
        # Standing in for the missing LLM, the flow does not book for a real caller with its made-up details.
        assert await tool_calls(service, "Tuesday at ten, please.") == []
        assert await service.services.redis.keys("phrase:*")
    finally:
        await service.aclose()


async def test_with_an_openai_key_the_agents_on_openai_use_it(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = boto3.client("secretsmanager").create_secret(Name="switchboard/openai", SecretString="sk-test")["ARN"]
    monkeypatch.setenv("OPENAI_SECRET_ARN", key)
    monkeypatch.setenv("SWITCHBOARD_PROVIDERS", "agents")
    service = await build(settings())
    try:
        assert isinstance(service.providers, AgentProviders)
        assert {choice.llm for choice in service.providers.choices.values()} == {"openai"}
        agent = AgentDirectory.load(REPO / "agents").get("clinic-receptionist")
        assert agent is not None
        assert type(service.providers.for_call(agent, {}).llm).__name__ == "OpenAILanguageModel"
    finally:
        await service.aclose()


async def test_offline_runs_every_agent_on_the_offline_engines(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_PROVIDERS", "offline")
    service = await build(settings())
    try:
        assert isinstance(service.providers, AgentProviders)
        offline = Choice(stt="pocketsphinx", tts="espeak", llm="scripted")
        assert set(service.providers.choices.values()) == {offline}
        assert await tool_calls(service, "Tuesday at ten, please.") == ["book_appointment"]  # the demo's flow acts
    finally:
        await service.aclose()


async def test_a_voice_without_the_agents_engine_stops_the_start(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = (REPO / "agents" / "clinic-receptionist.yaml").read_text()
    (tmp_path / "clinic-receptionist.yaml").write_text(source.replace("engine: neural", "engine: generative"))
    shutil.copytree(REPO / "agents" / "clinic-receptionist", tmp_path / "clinic-receptionist")
    monkeypatch.setenv("AGENTS_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_PROVIDERS", "agents")
    with pytest.raises(StartupError, match=r"clinic-receptionist.*Joanna does not support the generative engine"):
        await build(settings())


async def test_an_unknown_provider_mode_is_named(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_PROVIDERS", "openai")
    with pytest.raises(SettingsError, match="SWITCHBOARD_PROVIDERS"):
        settings()


async def test_the_cache_credentials_come_from_their_secret(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, redis_client: aioredis.Redis
) -> None:
    user, password = "media-service", "a-generated-cache-password"
    await redis_client.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    try:
        auth = json.dumps({"username": user, "password": password})
        arn = boto3.client("secretsmanager").create_secret(Name="switchboard/cache", SecretString=auth)["ARN"]
        monkeypatch.setenv("REDIS_AUTH_SECRET_ARN", arn)
        service = await build(settings())
        try:
            assert await service.services.redis.acl_whoami() == user
        finally:
            await service.aclose()
    finally:
        await redis_client.acl_deluser(user)


async def test_a_cache_secret_without_credentials_stops_the_start(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = boto3.client("secretsmanager").create_secret(Name="cache", SecretString='{"username": "x"}')["ARN"]
    monkeypatch.setenv("REDIS_AUTH_SECRET_ARN", arn)
    with pytest.raises(StartupError, match=r"REDIS_AUTH_SECRET_ARN: cannot read the secret(.|\n)*password"):
        await build(settings())


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        ("sk-live-key\n", "sk-live-key"),
        ("unset", None),
        ("  ", None),
        ('{"unset": "replace this whole secret with the OpenAI key", "placeholder": "x7Gq"}', None),
        ('{"api_key": "sk-1"}', '{"api_key": "sk-1"}'),  # not the stack's marker: the secret is the key
    ],
)
def test_what_the_openai_secret_holds(secret: str, key: str | None) -> None:
    assert openai_key_of(secret) == key


async def test_an_openai_secret_still_unset_means_no_key(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    unset = boto3.client("secretsmanager").create_secret(Name="switchboard/openai", SecretString="unset")["ARN"]
    monkeypatch.setenv("OPENAI_SECRET_ARN", unset)
    monkeypatch.setenv("SWITCHBOARD_PROVIDERS", "agents")
    service = await build(settings())
    try:
        assert isinstance(service.providers, AgentProviders)
        assert {choice.llm for choice in service.providers.choices.values()} == {"scripted"}
    finally:
        await service.aclose()
