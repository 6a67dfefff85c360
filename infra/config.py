"""What a deployment chooses, read from CDK context (`cdk deploy -c domainName=media.example.com ...`).

Everything has a default that synthesizes offline except the media domain, which Twilio must reach over
wss:// and so cannot be invented. Context values arrive as strings from the command line and as JSON
from cdk.json / cdk.context.json: the model accepts both.
"""

from enum import StrEnum
from typing import Annotated, Any

from aws_cdk import aws_logs as logs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streaming.server import MEDIA_PATH

CONTEXT_KEYS = {
    "domainName": "domain_name",
    "certificateArn": "certificate_arn",
    "hostedZoneId": "hosted_zone_id",
    "hostedZoneName": "hosted_zone_name",
    "redisMode": "redis_mode",
    "redisEngine": "redis_engine",
    "redisNodeType": "redis_node_type",
    "minTasks": "min_tasks",
    "maxTasks": "max_tasks",
    "callsPerTask": "calls_per_task",
    "taskCpu": "task_cpu",
    "taskMemoryMiB": "task_memory_mib",
    "natGateways": "nat_gateways",
    "interfaceEndpoints": "interface_endpoints",
    "bedrockModelIds": "bedrock_model_ids",
    "logRetentionDays": "log_retention_days",
    "apiRateLimit": "api_rate_limit",
    "apiBurstLimit": "api_burst_limit",
    "alarmEmail": "alarm_email",
}


RETENTION_DAYS = {
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}


class RedisMode(StrEnum):
    # ElastiCache Serverless: pay per use, no nodes to size; the default for a small deployment.
    SERVERLESS = "serverless"
    # A replication group of two nodes (primary + replica in another AZ), for a steady, known load.
    CLUSTER = "cluster"


class RedisEngine(StrEnum):
    # Valkey speaks the Redis protocol redis-py uses, and costs less on ElastiCache (serverless: from 100 MB
    # of storage instead of 1 GB), so it is the default; "redis" keeps Redis OSS.
    VALKEY = "valkey"
    REDIS = "redis"


DomainName = Annotated[str, Field(max_length=253, pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")]


class DeploymentConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    domain_name: DomainName = Field(description="The media host Twilio connects to: wss://<domain>/media")
    certificate_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/.+$")
    hosted_zone_id: str | None = Field(default=None, pattern=r"^Z[A-Z0-9]{1,32}$")
    hosted_zone_name: DomainName | None = None
    redis_mode: RedisMode = RedisMode.SERVERLESS
    redis_engine: RedisEngine = RedisEngine.VALKEY
    redis_node_type: str = Field(default="cache.t4g.small", pattern=r"^cache\.[a-z0-9]+\.[a-z0-9]+$")
    min_tasks: int = Field(default=2, ge=1, le=100)
    max_tasks: int = Field(default=10, ge=1, le=1000)
    # The ActiveCalls target per task: well below the engine's measured 200 calls per vCPU with simulated
    # providers, since real providers add TLS streams and SDK work per call.
    calls_per_task: int = Field(default=20, ge=1, le=1000)
    task_cpu: int = Field(default=512, description="Fargate CPU units (1024 = 1 vCPU)")
    task_memory_mib: int = Field(default=1024, ge=512)
    nat_gateways: int = Field(default=1, ge=1, le=3)
    # Interface endpoints bill per hour and AZ (about $73/month for the five, docs/deploy.md): they pay for
    # themselves in NAT bytes only at very high call volume, but keep the audio off the internet path.
    interface_endpoints: bool = True
    bedrock_model_ids: tuple[str, ...] = ()
    log_retention_days: int = Field(default=30, description="One of " + ", ".join(map(str, RETENTION_DAYS)))
    api_rate_limit: int = Field(default=50, ge=1)
    api_burst_limit: int = Field(default=100, ge=1)
    alarm_email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")

    @field_validator("bedrock_model_ids", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # `-c bedrockModelIds=a,b` arrives as one string; cdk.json can give a JSON list.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _known_retention(cls, value: int) -> int:
        if value not in RETENTION_DAYS:
            raise ValueError(f"must be one of {sorted(RETENTION_DAYS)}")
        return value

    @property
    def log_retention(self) -> logs.RetentionDays:
        return RETENTION_DAYS[self.log_retention_days]

    @property
    def public_stream_url(self) -> str:
        return f"wss://{self.domain_name}{MEDIA_PATH}"


class ConfigError(ValueError):
    """The context cannot make a deployment; the message names each bad context key."""


def config_from_context(get: Any) -> DeploymentConfig:
    """Build the config from `node.try_get_context`-like `get(key)`; unknown keys are not looked at."""
    values = {field: get(key) for key, field in CONTEXT_KEYS.items()}
    try:
        return DeploymentConfig(**{field: value for field, value in values.items() if value is not None})
    except ValidationError as exc:
        by_field = {field: key for key, field in CONTEXT_KEYS.items()}
        problems = []
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err["loc"] else ""
            reason = "is not set" if err["type"] == "missing" else err["msg"]
            problems.append(f"  context {by_field.get(field, field)}: {reason}")
        raise ConfigError("the CDK context cannot make a deployment:\n" + "\n".join(problems)) from None
