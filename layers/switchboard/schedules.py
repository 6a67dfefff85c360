"""Dials on a schedule: EventBridge Scheduler schedules whose target is the dialer function itself.

A schedule's payload (its target Input) is the DialRequest JSON, or a list of them for several numbers,
which Scheduler hands to the dialer as the Lambda event. Three kinds:

- POST /schedules, one time: `at(yyyy-mm-ddThh:mm:ss)` in the request's time zone, deleted after it ran;
- POST /schedules, recurring: a `cron(...)` campaign dialing the same list at each firing;
- our own one-time schedules: a retry of a busy / no-answer call (`retry-<CallSid>`) and a scheduled dial
  deferred to the next moment inside calling hours (`defer-<hash>`). Their names are derived from what
  they continue, so a second attempt to create one meets ConflictException instead of a duplicate.

Scheduler delivers at least once: every payload names its dials (dial ids), and the dial intent makes a
second delivery a no-op.
"""

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Self
from zoneinfo import ZoneInfo

import boto3
from botocore.exceptions import ClientError
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from switchboard.agent import TimeZoneName
from switchboard.call import AgentId
from switchboard.dial import DialRequest, Facts
from switchboard.phone import E164

if TYPE_CHECKING:
    from mypy_boto3_scheduler.client import EventBridgeSchedulerClient
    from mypy_boto3_scheduler.type_defs import CreateScheduleInputTypeDef, TargetTypeDef

# Filled in by Scheduler with the time the schedule fired (e.g. 2026-03-02T14:00:00Z).
SCHEDULED_TIME_PLACEHOLDER = "<aws.scheduler.scheduled-time>"
# Lambda's limit for an asynchronous invocation payload, which is how Scheduler invokes the function.
MAX_INPUT_BYTES = 256 * 1024
# Scheduler's own retries when the invocation fails to be delivered (throttling, a Lambda error).
# A dial an hour late is better in the dead-letter queue than placed at a surprising time.
RETRY_MAX_ATTEMPTS = 5
RETRY_MAX_EVENT_AGE_S = 3600

ScheduleName = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z_.-]{1,56}$")]

_CRON = re.compile(r"^(?:cron\()?\s*(?P<fields>[^()]+?)\s*\)?$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/#L\-]+$")
_SINGLE_MINUTE = re.compile(r"^(?:[0-5]?\d)$")
_HOUR_LIST = re.compile(r"^(?:1?\d|2[0-3])(?:,(?:1?\d|2[0-3]))*$")


def _campaign_cron(value: str) -> str:
    """`cron(minutes hours day-of-month month day-of-week year)`, at most a few firings a day.

    Each firing dials the whole list, so minutes must be one number and hours one or a few numbers: a
    `*` there would call the same people every minute or every hour.
    """
    match = _CRON.match(value.strip())
    if match is None:
        raise ValueError("expected cron(minutes hours day-of-month month day-of-week year)")
    fields = match["fields"].split()
    if len(fields) != 6 or not all(_CRON_FIELD.match(field) for field in fields):
        raise ValueError("expected six fields: cron(minutes hours day-of-month month day-of-week year)")
    minutes, hours, day_of_month, _, day_of_week, _ = fields
    if not _SINGLE_MINUTE.match(minutes) or not _HOUR_LIST.match(hours):
        raise ValueError(
            "minutes must be one number and hours a number or a comma list (e.g. cron(0 10,16 ? * MON-FRI *))"
        )
    if (day_of_month == "?") == (day_of_week == "?"):
        raise ValueError("exactly one of day-of-month and day-of-week must be '?'")
    return f"cron({' '.join(fields)})"


CampaignCron = Annotated[str, AfterValidator(_campaign_cron)]


class ScheduleRequest(BaseModel):
    """The body of POST /schedules: dial a list of numbers once (`at`) or on a recurring `cron`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_id: AgentId = Field(examples=["appointment-reminder"])
    to: list[E164] = Field(min_length=1, max_length=100, description="The callees, E.164, no repeats.")
    facts: Facts = Field(default_factory=dict, description="Given to the agent on every call of this schedule.")
    at: AwareDatetime | None = Field(
        default=None, description="One time: when to dial, with its UTC offset; must be in the future."
    )
    cron: CampaignCron | None = Field(
        default=None,
        description="Recurring: an EventBridge Scheduler cron expression, read in `timezone`.",
        examples=["cron(0 10 ? * MON-FRI *)"],
    )
    timezone: TimeZoneName = Field(default="UTC", description="IANA zone the schedule is read in.")
    name: ScheduleName | None = Field(
        default=None, description="The schedule's name (unique in the group); generated if absent."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.at is None) == (self.cron is None):
            raise ValueError("give exactly one of `at` (one time) and `cron` (recurring)")
        if self.at is not None and self.at <= datetime.now(UTC):
            raise ValueError("`at` must be in the future")
        if len(set(self.to)) != len(self.to):
            raise ValueError("`to` lists a number more than once")
        return self


class ScheduleCreated(BaseModel):
    """The answer to POST /schedules."""

    schedule_name: str
    schedule_arn: str
    group: str
    expression: str
    timezone: str
    one_time: bool
    numbers: int = Field(description="How many numbers each firing dials.")


class ScheduleExists(Exception):
    """A schedule of that name is already in the group (Scheduler's ConflictException)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"schedule {name} already exists")
        self.name = name


class ScheduleTooLarge(ValueError):
    """The payload would exceed what Scheduler can hand to Lambda."""


def at_expression(when: datetime, timezone: str = "UTC") -> str:
    """`at(yyyy-mm-ddThh:mm:ss)` for `when`, read in `timezone`; a fraction of a second rounds up, never early."""
    if when.utcoffset() is None:
        raise ValueError(f"when must be timezone-aware: {when!r}")
    if when.microsecond:
        when = when.replace(microsecond=0) + timedelta(seconds=1)
    return f"at({when.astimezone(ZoneInfo(timezone)):%Y-%m-%dT%H:%M:%S})"


def new_schedule_name() -> str:
    return f"dial-{uuid.uuid4().hex}"


def retry_schedule_name(call_sid: str) -> str:
    return f"retry-{call_sid}"


def dial_input(dials: Sequence[DialRequest], *, stamp_scheduled_time: bool) -> str:
    """The target Input: one DialRequest object, or a list of them.

    `stamp_scheduled_time` adds Scheduler's scheduled-time placeholder to each, so each firing's dials
    have their own intents (recurring schedules, and user schedules whose name may be reused later).
    """
    if not dials:
        raise ValueError("a schedule dials at least one number")
    payloads: list[dict[str, Any]] = []
    for dial in dials:
        payload = dial.model_dump(mode="json", exclude_none=True)
        if stamp_scheduled_time:
            payload["scheduled_time"] = SCHEDULED_TIME_PLACEHOLDER
        payloads.append(payload)
    body = payloads[0] if len(payloads) == 1 else payloads
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > MAX_INPUT_BYTES:
        raise ScheduleTooLarge(
            f"the schedule's payload is {len(text.encode())} bytes, over the {MAX_INPUT_BYTES} Lambda accepts: "
            "split the numbers over several schedules or shorten the facts"
        )
    return text


@dataclass(frozen=True)
class DialSchedules:
    """Creates schedules in one group, all targeting the dialer function with one role."""

    group: str
    target_arn: str
    role_arn: str
    dead_letter_arn: str | None = None
    client: "EventBridgeSchedulerClient | None" = None

    def _scheduler(self) -> "EventBridgeSchedulerClient":
        return self.client if self.client is not None else boto3.client("scheduler")

    def create(
        self, *, name: str, expression: str, timezone: str, input_json: str, one_time: bool, description: str
    ) -> str:
        """Create the schedule and return its ARN; ScheduleExists when the name is taken in the group."""
        target: TargetTypeDef = {
            "Arn": self.target_arn,
            "RoleArn": self.role_arn,
            "Input": input_json,
            "RetryPolicy": {
                "MaximumRetryAttempts": RETRY_MAX_ATTEMPTS,
                "MaximumEventAgeInSeconds": RETRY_MAX_EVENT_AGE_S,
            },
        }
        if self.dead_letter_arn is not None:
            target["DeadLetterConfig"] = {"Arn": self.dead_letter_arn}
        params: CreateScheduleInputTypeDef = {
            "Name": name,
            "GroupName": self.group,
            "ScheduleExpression": expression,
            "ScheduleExpressionTimezone": timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": target,
            "State": "ENABLED",
            "Description": description[:512],
        }
        if one_time:
            # A one-time schedule is spent once it ran: leaving it would fill the group with dead schedules.
            params["ActionAfterCompletion"] = "DELETE"
        try:
            response = self._scheduler().create_schedule(**params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConflictException":
                raise ScheduleExists(name) from exc
            raise
        return response["ScheduleArn"]

    def dial_at(self, *, name: str, when: datetime, dials: Sequence[DialRequest], description: str) -> str:
        """A one-time schedule of our own (retry, deferral): UTC, payload without a scheduled time."""
        return self.create(
            name=name,
            expression=at_expression(when, "UTC"),
            timezone="UTC",
            input_json=dial_input(dials, stamp_scheduled_time=False),
            one_time=True,
            description=description,
        )
