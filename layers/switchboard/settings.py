"""Settings, one model per deployable, read from environment variables at start.

A missing or malformed variable stops the process at start, naming the variable and the reason, rather
than failing on the first call that needs it. Secrets are never here: only the ARNs of the Secrets
Manager secrets that hold them (read through Powertools Parameters).
"""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, AnyUrl, Field, UrlConstraints, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

HttpsUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["https"])]
WssUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["wss"])]
RedisUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["redis", "rediss"])]
SecretArn = Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$")]
TableName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{3,255}$")]
Region = Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")]


class SettingsError(RuntimeError):
    """The environment cannot run this deployable. The message lists every bad variable."""


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    aws_region: Region
    calls_table: TableName
    agents_dir: Path = Path("agents")


class _TwilioSettings(_Settings):
    twilio_secret_arn: SecretArn
    # Unset in production. Points the Twilio client at a Twilio-compatible server (a local test double).
    twilio_api_base_url: AnyHttpUrl | None = None


class VoiceWebhookSettings(_TwilioSettings):
    """POST /twilio/voice and /twilio/stream-ended: answer a call and point it at the media stream."""

    public_api_url: HttpsUrl = Field(description="The https base URL Twilio was given, stage path included.")
    public_stream_url: WssUrl = Field(description="The wss:// URL of the media stream, e.g. wss://media.x.com/media")
    stream_token_secret_arn: SecretArn
    max_stream_resumes: int = Field(default=3, ge=0, le=20)
    # Optional so a deployment without a bus still answers calls; the CDK stack always sets it.
    event_bus_name: str | None = Field(default=None, min_length=1, description="Where CallStarted is published.")


class StatusCallbackSettings(_TwilioSettings):
    """POST /twilio/status: call status callbacks into the call record."""

    public_api_url: HttpsUrl
    event_bus_name: str = Field(min_length=1)


class ToolActionsSettings(_TwilioSettings):
    """POST /tools/{name}: the side effects the agents may cause, policy-checked."""

    appointments_table: TableName
    idempotency_table: TableName
    event_bus_name: str = Field(min_length=1)
    # How long a tool call's result is replayed to its duplicates: longer than the longest call (4 h).
    idempotency_ttl_s: int = Field(default=4 * 3600 + 600, ge=60, le=7 * 24 * 3600)


class DialerSettings(_TwilioSettings):
    """POST /calls and /schedules: outbound calls now or on a schedule."""

    public_api_url: HttpsUrl
    schedule_group: str = Field(min_length=1)
    scheduler_role_arn: str = Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")
    dialer_function_arn: str = Field(pattern=r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:.+$")
    do_not_call_table: TableName | None = None
    # How far ahead a dial may claim its one-call-per-second slot (and then wait for it), per from-number.
    dial_pacing_max_wait_s: int = Field(default=10, ge=0, le=20)
    # Where Scheduler puts a dial it could not deliver (an SQS queue), so no scheduled dial vanishes.
    schedule_dead_letter_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:sqs:[a-z0-9-]+:\d{12}:.+$")


class StreamingSettings(_TwilioSettings):
    """The Fargate media service: one WebSocket per live call."""

    # Without credentials: they come from REDIS_AUTH_SECRET_ARN, never from the environment.
    redis_url: RedisUrl
    # The cache user's credentials, JSON {"username": ..., "password": ...}; unset, Redis has no AUTH (locally).
    redis_auth_secret_arn: SecretArn | None = None
    public_stream_url: WssUrl
    tools_api_url: HttpsUrl
    stream_token_secret_arn: SecretArn
    # Which providers calls use (streaming.providers.choice): each agent's own ("agents"), the offline engines
    # for every agent ("offline"), or the simulator's scenarios ("simulated", tests and benchmarks).
    providers: Literal["agents", "offline", "simulated"] = Field(default="agents", alias="SWITCHBOARD_PROVIDERS")
    # The OpenAI key's secret (its value is the key; "unset" until one is put there). Without a key, agents on
    # OpenAI answer with their scripted flow.
    openai_secret_arn: SecretArn | None = None
    # An OpenAI-compatible server instead of OpenAI's API (a proxy, vLLM, Ollama).
    openai_base_url: AnyHttpUrl | None = None
    port: int = Field(default=8080, ge=1, le=65535)
    # ECS gives a task at most 120 s between SIGTERM and SIGKILL: drain, then hand the calls over, within it.
    drain_seconds: int = Field(default=100, ge=0, le=110)
    # Where TurnCompleted is published; unset, no turn events are sent.
    event_bus_name: str | None = Field(default=None, min_length=1)


def load_settings[S: _Settings](model: type[S]) -> S:
    """Read a deployable's settings from the environment, or fail naming each bad variable."""
    try:
        return model()
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            name = str(err["loc"][0]).upper() if err["loc"] else "(settings)"
            reason = "is not set" if err["type"] == "missing" else err["msg"]
            problems.append(f"  {name}: {reason}")
        raise SettingsError(f"{model.__name__} cannot start:\n" + "\n".join(problems)) from None
