"""`python -m streaming`: everything built from the environment, and a clear stop when it is wrong.

Secrets Manager runs on moto in-process; the built app is then served by real uvicorn with the real
call engine and simulated providers, and answers its health check.
"""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from streaming.__main__ import PROVIDERS_VARIABLE, MediaService, StartupError, build
from streaming.server import create_app
from streaming.serving import MediaServer, uvicorn_config
from switchboard.records import table_definition
from switchboard.settings import StreamingSettings, load_settings
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
            PROVIDERS_VARIABLE: "simulated",
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        yield values
        parameters.clear_caches()  # type: ignore[no-untyped-call]


def settings() -> StreamingSettings:
    return load_settings(StreamingSettings)


async def test_the_built_service_serves_its_health_check(environment: dict[str, str]) -> None:
    service = build(settings())
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


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(None, f"{PROVIDERS_VARIABLE} is not set", id="unset"),
        pytest.param("openai", f"{PROVIDERS_VARIABLE} is 'openai'", id="not-available"),
    ],
)
def test_providers_must_be_chosen_explicitly(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, value: str | None, message: str
) -> None:
    if value is None:
        monkeypatch.delenv(PROVIDERS_VARIABLE)
    else:
        monkeypatch.setenv(PROVIDERS_VARIABLE, value)
    with pytest.raises(StartupError, match=message) as raised:
        build(settings())
    assert "simulated" in str(raised.value)


def test_an_unreadable_secret_stops_the_start(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:absent-AbCdEf")
    with pytest.raises(StartupError, match="TWILIO_SECRET_ARN: cannot read the secret"):
        build(settings())


def test_a_short_stream_token_key_stops_the_start(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    short = boto3.client("secretsmanager").create_secret(Name="short", SecretString="too short")["ARN"]
    monkeypatch.setenv("STREAM_TOKEN_SECRET_ARN", short)
    with pytest.raises(StartupError, match="at least 32 bytes"):
        build(settings())


def test_a_bad_agents_directory_stops_the_start(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENTS_DIR", str(tmp_path))
    with pytest.raises(StartupError, match=r"AGENTS_DIR: .*no agent files"):
        build(settings())


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
