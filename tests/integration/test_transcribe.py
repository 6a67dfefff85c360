"""The Transcribe adapter's production wiring: botocore's credentials, the SDK client, and real Transcribe.

- Credentials come through botocore's chain into the SDK's identity resolver. On Fargate that is the ECS
  container credentials endpoint; here a local HTTP server plays it (AWS_CONTAINER_CREDENTIALS_FULL_URI on
  127.0.0.1), so the same code path runs.
- The real-AWS round trip is marked `aws` and skipped without credentials (checked with botocore, without
  asking instance metadata).
"""

import asyncio
import json
import struct
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import botocore.credentials
import botocore.session
import numpy as np
import pytest

from streaming.audio import synth
from streaming.audio.codec import FRAME_BYTES_PCM
from streaming.providers.base import Transcript
from streaming.providers.transcribe import (
    BotocoreCredentials,
    TranscribeError,
    TranscribeSettings,
    TranscribeSpeechToText,
)
from tests.support.transcribe_server import LocalTranscribe, wire_result

ROLE_KEYS = {
    "AccessKeyId": "ASIATASKROLEEXAMPLE",
    "SecretAccessKey": "task-role-secret",
    "Token": "task-role-session-token",
}


class ContainerCredentialsEndpoint:
    """What ECS gives a task at 169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: its role's keys."""

    def __init__(self) -> None:
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests += 1
                expiration = (datetime.now(UTC) + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
                body = json.dumps({**ROLE_KEYS, "Expiration": expiration, "RoleArn": "arn:aws:iam::1:role/t"})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v2/credentials/task"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing from the environment, the shared files or instance metadata: only what a test provides."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")


@pytest.fixture
def task_role(no_ambient_credentials: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContainerCredentialsEndpoint]:
    endpoint = ContainerCredentialsEndpoint()
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.url)
    yield endpoint
    endpoint.close()


async def test_the_task_roles_credentials_reach_the_sdk(task_role: ContainerCredentialsEndpoint) -> None:
    credentials = BotocoreCredentials(boto3.Session())

    identity = await credentials.get_identity(properties={})
    again = await credentials.get_identity(properties={})

    assert identity.access_key_id == ROLE_KEYS["AccessKeyId"]
    assert identity.secret_access_key == ROLE_KEYS["SecretAccessKey"]
    assert identity.session_token == ROLE_KEYS["Token"]
    assert again is identity
    assert task_role.requests == 1  # signing ten events a second does not ask the endpoint each time


async def test_the_adapter_builds_its_client_from_the_task_role(task_role: ContainerCredentialsEndpoint) -> None:
    stt = await TranscribeSpeechToText.create()
    await stt.aclose()
    assert task_role.requests == 1


@pytest.mark.usefixtures("no_ambient_credentials")
async def test_no_credentials_is_a_clear_error_at_creation() -> None:
    with pytest.raises(TranscribeError, match="Amazon Transcribe needs AWS credentials: no AWS credentials found"):
        await TranscribeSpeechToText.create()


@pytest.mark.usefixtures("no_ambient_credentials")
async def test_no_region_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(TranscribeError, match="no AWS region"):
        await TranscribeSpeechToText.create()


# -- the SDK's own client, over a local Transcribe ------------------------------------------------------------


def frames(first: int, count: int) -> list[bytes]:
    return [struct.pack("<h", index + 1) * (FRAME_BYTES_PCM // 2) for index in range(first, first + count)]


async def test_the_sdk_client_streams_signed_audio_and_survives_an_internal_failure(
    task_role: ContainerCredentialsEndpoint,
) -> None:
    local = LocalTranscribe()
    stt = await TranscribeSpeechToText.create(region="eu-west-1", transport=local)
    try:
        session = await stt.start(language="en-GB", vocabulary="clinic-terms")
        transcripts = session.transcripts()
        first = await local.stream(0)

        headers = first.headers
        assert headers["x-amzn-transcribe-language-code"] == "en-GB"
        assert headers["x-amzn-transcribe-media-encoding"] == "pcm"
        assert headers["x-amzn-transcribe-sample-rate"] == "8000"
        assert headers["x-amzn-transcribe-vocabulary-name"] == "clinic-terms"
        assert headers["x-amzn-transcribe-enable-partial-results-stabilization"] == "true"
        assert headers["x-amzn-transcribe-partial-results-stability"] == "high"
        assert f"Credential={ROLE_KEYS['AccessKeyId']}/" in headers["authorization"]  # the task role signed it
        assert headers["x-amz-security-token"] == ROLE_KEYS["Token"]

        for frame in frames(0, 50):
            await session.send_audio(frame)
        await first.until(lambda: len(first.audio) == 16_000)
        assert first.audio == b"".join(frames(0, 50))
        # In events of the production size; the last holds what was left when the frames stopped.
        event_bytes = TranscribeSettings().chunk_ms * 16
        assert {len(event) for event in first.audio_events[:-1]} == {event_bytes}
        assert 0 < len(first.audio_events[-1]) <= event_bytes

        first.results(wire_result("r1", "Hello there.", 0.0, 0.4, partial=False, stable=2))
        first.results(wire_result("r2", "I need a", 0.5, 0.9, partial=True, stable=2))
        assert await anext(transcripts) == Transcript("r1", "Hello there.", "Hello there.", True, 0, 400)
        assert await anext(transcripts) == Transcript("r2", "I need a", "I need", False, 500, 900)

        first.exception("InternalFailureException", "A problem occurred while processing the audio.")
        second = await local.stream(1)
        await second.until(lambda: len(second.audio) == 9_600)
        assert second.audio == b"".join(frames(20, 30))  # what was not final, once
        second.results(wire_result("r3", "I need a nurse.", 0.1, 0.6, partial=False, stable=4))
        assert await anext(transcripts) == Transcript("r3", "I need a nurse.", "I need a nurse.", True, 500, 1000)

        await session.aclose()
        assert second.ended
        with pytest.raises(StopAsyncIteration):
            await anext(transcripts)
    finally:
        await stt.aclose()


async def test_the_sdk_clients_bad_request_ends_the_transcripts(task_role: ContainerCredentialsEndpoint) -> None:
    local = LocalTranscribe()
    local.refusals = [(400, "BadRequestException", "The requested vocabulary couldn't be found.")]
    stt = await TranscribeSpeechToText.create(region="eu-west-1", transport=local)
    try:
        session = await stt.start(language="en-US", vocabulary="missing")
        with pytest.raises(TranscribeError, match="BadRequestException: The requested vocabulary couldn't be found"):
            await anext(session.transcripts())
        await session.aclose()
    finally:
        await stt.aclose()


# -- real Amazon Transcribe ----------------------------------------------------------------------------------


def _real_credentials() -> bool:
    """Credentials from the environment, the shared files or a container endpoint. Instance metadata is
    left out: asking it costs a timeout on a machine that has none, at collection time."""
    resolver = botocore.credentials.create_credential_resolver(botocore.session.get_session())
    resolver.remove("iam-role")
    return resolver.load_credentials() is not None


@pytest.mark.aws
@pytest.mark.skipif(not _real_credentials(), reason="needs AWS credentials")
async def test_a_round_trip_through_real_transcribe() -> None:
    """Two seconds of quiet, a second of speech-like sound, quiet again: the stream opens with the request
    the adapter builds, takes the audio, and closes cleanly with whatever Transcribe made of it."""
    stt = await TranscribeSpeechToText.create()
    try:
        session = await stt.start(language="en-US")
        collected: list[Transcript] = []

        async def collect() -> None:
            async for transcript in session.transcripts():
                collected.append(transcript)

        reader = asyncio.create_task(collect())
        sound = np.concatenate([synth.silence(2000), synth.voiced(1000, level_dbfs=-20.0), synth.silence(1500)])
        pcm = sound.astype("<i2").tobytes()
        for offset in range(0, len(pcm), FRAME_BYTES_PCM):
            await session.send_audio(pcm[offset : offset + FRAME_BYTES_PCM])
            await asyncio.sleep(0.02)  # as the engine sends: in real time
        await session.aclose()
        await reader  # ends without raising: Transcribe accepted the request and the audio
        for transcript in collected:
            assert 0 <= transcript.start_ms <= transcript.end_ms <= 4500
    finally:
        await stt.aclose()
