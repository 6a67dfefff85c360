"""Real parts for the tests: a throwaway redis-server, and moto standing in for AWS."""

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.support.redis_server import RedisServerError, running_redis_server
from tests.support.twilio_stub import TwilioStub, running_twilio_stub

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when set; otherwise a redis-server of our own on a free port, gone after the session."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    try:
        with running_redis_server() as url:
            yield url
    except RedisServerError as exc:
        pytest.fail(str(exc))


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A redis.asyncio client on an emptied database."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials so nothing can reach a real account, and one region for every client."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def twilio_stub() -> Iterator[TwilioStub]:
    """A local Twilio REST API for the real twilio client (point TWILIO_API_BASE_URL at twilio_stub.url)."""
    with running_twilio_stub() as stub:
        yield stub


@pytest.fixture(autouse=True)
def _logger_state_per_test() -> Iterator[None]:
    """Handlers under test run `logger.inject_lambda_context`, which leaves the Lambda context keys and
    the request's correlation id on the process-wide logger; the next test must not inherit them."""
    yield
    from switchboard.observability import logger

    logger.clear_state()
