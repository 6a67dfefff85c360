"""Outbound dialing: the dial intent, the pacing, Twilio's calls.create, the call record, and the retries.

One dial, in order (see switchboard.dial for the intent's states):

1. the dial intent is written (`received`), before any check, so every request leaves a trace;
2. the policies of switchboard.outbound: agent, number, country, do-not-call, calling hours;
3. a pacing slot: one calls.create per second per from-number, across every concurrent Lambda;
4. `dialing`, then Twilio's calls.create with the arguments the other functions expect;
5. `dialed` with the CallSid, then the call record (the voice webhook may have written it first);
   or `failed` with Twilio's error code, and no call record, since there is no call.

A scheduled dial that meets closed calling hours (or no free pacing slot) is not dropped: it is deferred
to a new one-time schedule at the next allowed moment. A dial from the API is answered instead, so the
client decides.

The calls table holds two more item kinds for this, beside the `CALL#` partitions of switchboard.records:

    pk `DIAL#<dial id>`      sk `DIAL`              one dial intent
    pk `PACE#<from number>`  sk `SECOND#<epoch s>`  one pacing slot, gone by TTL after an hour
"""

import hashlib
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field
from twilio.base.exceptions import TwilioException, TwilioRestException

from switchboard.agent import AgentConfig, AgentDirectory, Outbound
from switchboard.call import Call, CallDirection, CallSid, CallStatus
from switchboard.dial import DialIntent, DialRequest, DialSource, DialStatus, ScheduledDial
from switchboard.observability import call_context, logger
from switchboard.outbound import (
    Callee,
    DialRefused,
    DoNotCallList,
    RefusalReason,
    check_callee,
    check_calling_hours,
    next_allowed_at,
)
from switchboard.records import TTL_ATTRIBUTE, CallRecords, ConflictingRecord
from switchboard.schedules import (
    DialSchedules,
    ScheduleCreated,
    ScheduleExists,
    ScheduleRequest,
    at_expression,
    dial_input,
    new_schedule_name,
    retry_schedule_name,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef
    from twilio.rest import Client

INTENT_PK_PREFIX = "DIAL#"
INTENT_SK = "DIAL"
PACE_PK_PREFIX = "PACE#"
PACE_SK_PREFIX = "SECOND#"
ITEM_TYPE_DIAL = "dial"
ITEM_TYPE_PACE = "pace"

# The status callbacks every outbound call asks for, and what the status callback function expects.
STATUS_CALLBACK_EVENTS = ["initiated", "ringing", "answered", "completed"]
# A pacing slot outlives its second by this much, for inspection; DynamoDB's TTL removes it later.
PACING_SLOT_TTL_S = 3600
# A scheduled dial that found no pacing slot tries again this much later.
RATE_LIMIT_DEFERRAL = timedelta(minutes=1)

Clock = Callable[[], datetime]

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _to_item(attrs: Mapping[str, Any]) -> dict[str, "AttributeValueTypeDef"]:
    return {key: _SERIALIZER.serialize(value) for key, value in attrs.items()}


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(inner) for key, inner in value.items()}
        if isinstance(value, list):
            return [plain(inner) for inner in value]
        # Only integers are stored here (attempt, codes, seconds): a Decimal comes back as int.
        if isinstance(value, Decimal):
            return int(value)
        return value

    return {key: plain(_DESERIALIZER.deserialize(value)) for key, value in item.items()}


class DialIdConflict(Exception):
    """A dial id already names a different request (another agent, number, attempt or facts)."""

    def __init__(self, dial_id: str) -> None:
        super().__init__(f"dial id {dial_id} was already used for a different request")
        self.dial_id = dial_id


class DialRateLimited(Exception):
    """No free pacing second within the bound; the dial intent stays `received`, to be taken up by a retry."""

    def __init__(self, dial_id: str, message: str) -> None:
        super().__init__(message)
        self.dial_id = dial_id
        self.message = message


class DialIntents:
    """The dial intents in the calls table. Every change is conditional on the state it leaves."""

    def __init__(self, table_name: str, client: "DynamoDBClient | None" = None) -> None:
        self.table_name = table_name
        self._client = client

    @property
    def client(self) -> "DynamoDBClient":
        if self._client is None:
            self._client = boto3.client("dynamodb")
        return self._client

    @staticmethod
    def _key(dial_id: str) -> dict[str, "AttributeValueTypeDef"]:
        return _to_item({"pk": INTENT_PK_PREFIX + dial_id, "sk": INTENT_SK})

    @staticmethod
    def _intent(item: Mapping[str, Any]) -> DialIntent:
        attrs = _from_item(item)
        return DialIntent.model_validate({key: value for key, value in attrs.items() if key in DialIntent.model_fields})

    def open(self, intent: DialIntent) -> tuple[DialIntent, bool]:
        """Record a new intent: (it, True); or (the one already under its dial id, False)."""
        attrs = intent.model_dump(mode="json", exclude_none=True)
        attrs.update({"pk": INTENT_PK_PREFIX + intent.dial_id, "sk": INTENT_SK, "item_type": ITEM_TYPE_DIAL})
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=_to_item(attrs),
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": "pk"},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            # DynamoDB returns the item that failed the condition (ReturnValuesOnConditionCheckFailure).
            existing = cast("dict[str, Any]", exc.response).get("Item")
            if existing is None:
                found = self.get(intent.dial_id)
                if found is None:
                    raise
                return found, False
            return self._intent(existing), False
        return intent, True

    def get(self, dial_id: str) -> DialIntent | None:
        response = self.client.get_item(TableName=self.table_name, Key=self._key(dial_id), ConsistentRead=True)
        item = response.get("Item")
        return self._intent(item) if item is not None else None

    def move(
        self, dial_id: str, expected: DialStatus, to: DialStatus, at: datetime, **fields: Any
    ) -> DialIntent | None:
        """Move the intent from `expected` to `to`, setting `fields` (None ones left out); None if not at `expected`."""
        values: dict[str, Any] = {":expected": expected.value, ":to": to.value, ":at": at.astimezone(UTC).isoformat()}
        names = {"#status": "status", "#updated_at": "updated_at"}
        sets = ["#status = :to", "#updated_at = :at"]
        for name, value in fields.items():
            if value is None:
                continue
            names[f"#{name}"] = name
            values[f":{name}"] = value.isoformat() if isinstance(value, datetime) else value
            sets.append(f"#{name} = :{name}")
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=self._key(dial_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="#status = :expected",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_to_item(values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return self._intent(response["Attributes"])


class Pacer:
    """One calls.create per second per from-number, across every Lambda running at once.

    Each dial claims a second with a conditional put (`PACE#<from>` / `SECOND#<s>`): the current second if
    it is free, else the first free one after it, up to `max_wait_s` ahead; then it sleeps until its
    second starts. Claims are atomic in DynamoDB, so two dials never share a second, however many
    Lambdas run. Twilio's limit is per account and it queues rather than refuses calls beyond it;
    pacing per number keeps each caller ID's rate at what carriers expect of a person, not a robot.
    """

    def __init__(
        self,
        table_name: str,
        client: "DynamoDBClient | None" = None,
        *,
        max_wait_s: int = 10,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s}")
        self.table_name = table_name
        self.max_wait_s = max_wait_s
        self._client = client
        self._clock = clock
        self._sleep = sleep

    @property
    def client(self) -> "DynamoDBClient":
        if self._client is None:
            self._client = boto3.client("dynamodb")
        return self._client

    def acquire(self, from_number: str, dial_id: str) -> int | None:
        """Claim a second, wait for it, and return it (epoch seconds); None if none is free within the bound."""
        now = self._clock()
        first = int(now)
        for second in range(first, first + self.max_wait_s + 1):
            if self._claim(from_number, second, dial_id):
                if second > now:
                    self._sleep(second - now)
                return second
        return None

    def _claim(self, from_number: str, second: int, dial_id: str) -> bool:
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=_to_item(
                    {
                        "pk": PACE_PK_PREFIX + from_number,
                        "sk": f"{PACE_SK_PREFIX}{second:012d}",
                        "item_type": ITEM_TYPE_PACE,
                        "second": second,
                        "dial_id": dial_id,
                        TTL_ATTRIBUTE: second + PACING_SLOT_TTL_S,
                    }
                ),
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": "pk"},
            )
        except ClientError as exc:
            if _error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True


@dataclass(frozen=True)
class DialResult:
    """The dial intent as this request left it. `replayed`: the dial id was known, nothing was done now."""

    intent: DialIntent
    replayed: bool = False


class CallCompleted(BaseModel):
    """The detail of a CallCompleted event (switchboard.events), as the retry rule delivers it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    call_sid: CallSid
    agent_id: str
    at: datetime
    status: CallStatus
    direction: CallDirection
    duration_s: int | None = None
    answered_by: str | None = None
    attempt: int = Field(default=1, ge=1)


class RetryDecision(StrEnum):
    SCHEDULED = "scheduled"
    ALREADY_SCHEDULED = "already_scheduled"
    NOT_OUTBOUND = "not_outbound"
    NOT_RETRIED_STATUS = "not_retried_status"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    UNKNOWN_AGENT = "unknown_agent"
    UNKNOWN_CALL = "unknown_call"


@dataclass(frozen=True)
class RetryOutcome:
    decision: RetryDecision
    schedule_name: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class NumberRefusal:
    """One number of a schedule request that a policy refuses."""

    index: int
    reason: RefusalReason
    message: str


class ScheduleRefused(Exception):
    """Some numbers of a schedule request can never be dialed by its agent; nothing was scheduled."""

    def __init__(self, refusals: list[NumberRefusal]) -> None:
        super().__init__(f"{len(refusals)} number(s) refused")
        self.refusals = refusals


def deferral_name(dial_id: str) -> str:
    """The one-time schedule that takes up a deferred dial: derived from it, so deferring twice is one schedule."""
    return "defer-" + hashlib.sha256(dial_id.encode()).hexdigest()[:40]


def _outbound(agent: AgentConfig | None, agent_id: str) -> Outbound:
    if agent is None:
        raise DialRefused(RefusalReason.UNKNOWN_AGENT, f"There is no agent {agent_id!r}.")
    if agent.outbound is None:
        raise DialRefused(RefusalReason.NOT_AN_OUTBOUND_AGENT, f"Agent {agent_id!r} makes no outbound calls.")
    return agent.outbound


class Dialer:
    """Places outbound calls, schedules them, and retries the ones nobody answered."""

    def __init__(
        self,
        *,
        agents: AgentDirectory,
        intents: DialIntents,
        pacer: Pacer,
        records: CallRecords,
        twilio: Callable[[], "Client"],
        schedules: DialSchedules,
        public_api_url: str,
        do_not_call: DoNotCallList | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        self._agents = agents
        self._intents = intents
        self._pacer = pacer
        self._records = records
        self._twilio = twilio
        self._schedules = schedules
        self._public_api_url = public_api_url.rstrip("/")
        self._do_not_call = do_not_call
        self._clock = clock

    # -- dialing -------------------------------------------------------------------------------------

    def dial(self, request: DialRequest) -> DialResult:
        """Dial now, for the API: a refusal or failure is recorded and returned, never deferred.

        DialRateLimited when no pacing second is free within the bound (the client retries).
        """
        dial_id = request.dial_id or uuid.uuid4().hex
        return self._dial(request, dial_id, source="api", deferrable=False)

    def dial_scheduled(self, request: ScheduledDial) -> DialResult:
        """Dial for a schedule: outside calling hours (or pacing) the dial moves to a new one-time schedule."""
        return self._dial(request, request.intent_id(), source="schedule", deferrable=True)

    def _dial(self, request: DialRequest, dial_id: str, *, source: DialSource, deferrable: bool) -> DialResult:
        now = self._clock()
        agent = self._agents.get(request.agent_id)
        from_number = agent.outbound.from_number if agent is not None and agent.outbound is not None else None
        fresh = DialIntent(
            dial_id=dial_id,
            agent_id=request.agent_id,
            to_number=request.to,
            from_number=from_number,
            attempt=request.attempt,
            facts=dict(request.facts),
            source=source,
            status=DialStatus.RECEIVED,
            requested_at=now,
            updated_at=now,
        )
        intent, created = self._intents.open(fresh)
        if not created:
            if not intent.asks_the_same(fresh):
                raise DialIdConflict(dial_id)
            if intent.status is not DialStatus.RECEIVED:
                logger.info("Dial already handled", extra={"dial_id": dial_id, "status": intent.status.value})
                return DialResult(intent, replayed=True)
            # Recorded, but whoever recorded it stopped before asking Twilio (or is still checking):
            # taking it up is safe, since only one of us can move it on to `dialing`.
            logger.info("Taking up a dial that was received but not dialed", extra={"dial_id": dial_id})
        return self._proceed(intent, agent, deferrable)

    def _proceed(self, intent: DialIntent, agent: AgentConfig | None, deferrable: bool) -> DialResult:
        now = self._clock()
        try:
            outbound = _outbound(agent, intent.agent_id)
            callee = check_callee(intent.to_number, outbound.allowed_countries)
            if self._do_not_call is not None and self._do_not_call.contains(callee.number):
                raise DialRefused(RefusalReason.DO_NOT_CALL, "The number is on the do-not-call list.")
            check_calling_hours(outbound.calling_hours, callee, now)
        except DialRefused as refusal:
            if deferrable and refusal.next_allowed_at is not None:
                return self._defer(intent, refusal.next_allowed_at, refusal.reason.value, refusal.message)
            logger.info("Dial refused", extra={"dial_id": intent.dial_id, "reason": refusal.reason.value})
            return self._settle(
                intent,
                DialStatus.RECEIVED,
                DialStatus.REFUSED,
                reason=refusal.reason.value,
                message=refusal.message,
                next_allowed_at=refusal.next_allowed_at,
            )
        # Before the pacing slot and `dialing`: a secret or client that cannot be loaded leaves the
        # intent `received`, to be taken up by a retry, instead of stuck in `dialing`.
        twilio = self._twilio()
        second = self._pacer.acquire(outbound.from_number, intent.dial_id)
        if second is None:
            message = f"No free second to dial from this number within {self._pacer.max_wait_s} s; try again shortly."
            if deferrable:
                return self._defer(intent, self._clock() + RATE_LIMIT_DEFERRAL, "rate_limited", message)
            # Left `received`: nothing was asked of Twilio, so the client's retry with the same dial id
            # takes it up and dials.
            logger.warning("No pacing slot for a dial", extra={"dial_id": intent.dial_id})
            raise DialRateLimited(intent.dial_id, message)
        dialing = self._intents.move(
            intent.dial_id, DialStatus.RECEIVED, DialStatus.DIALING, self._clock(), pacing_second=second
        )
        if dialing is None:
            return self._current(intent.dial_id)
        return self._call(dialing, outbound, callee, twilio)

    def _call(self, intent: DialIntent, outbound: Outbound, callee: Callee, twilio: "Client") -> DialResult:
        base = self._public_api_url
        try:
            call = twilio.calls.create(
                to=callee.number,
                from_=outbound.from_number,
                url=f"{base}/twilio/voice?agent_id={intent.agent_id}",
                status_callback=f"{base}/twilio/status",
                status_callback_event=STATUS_CALLBACK_EVENTS,
                status_callback_method="POST",
                machine_detection="DetectMessageEnd",
                # Twilio's parameter is a string; the library sends it as given.
                async_amd="true",
                async_amd_status_callback=f"{base}/twilio/amd",
                async_amd_status_callback_method="POST",
            )
        except TwilioRestException as exc:
            logger.warning(
                "Twilio refused the call",
                extra={"dial_id": intent.dial_id, "twilio_code": exc.code, "http": exc.status},
            )
            return self._settle(
                intent,
                DialStatus.DIALING,
                DialStatus.FAILED,
                reason="twilio_error",
                message=str(exc.msg),
                twilio_code=int(exc.code) if exc.code is not None else None,
                twilio_status=int(exc.status),
            )
        except (TwilioException, OSError) as exc:
            # No answer from Twilio (timeout, connection): whether it placed the call is unknown. If it did,
            # the voice webhook records the call when it is answered, so the call is not lost either way.
            logger.warning(
                "Twilio could not be reached", extra={"dial_id": intent.dial_id, "error": type(exc).__name__}
            )
            return self._settle(
                intent,
                DialStatus.DIALING,
                DialStatus.FAILED,
                reason="twilio_unreachable",
                message=f"Twilio could not be reached ({type(exc).__name__}); whether it placed the call is unknown.",
            )
        call_sid = str(call.sid)
        with call_context(call_sid):
            result = self._settle(intent, DialStatus.DIALING, DialStatus.DIALED, call_sid=call_sid)
            self._record_call(result.intent, call_sid, outbound, callee)
            logger.info("Dialed", extra={"dial_id": intent.dial_id, "attempt": intent.attempt})
        return result

    def _record_call(self, intent: DialIntent, call_sid: str, outbound: Outbound, callee: Callee) -> None:
        call = Call(
            call_sid=call_sid,
            direction=CallDirection.OUTBOUND,
            from_number=outbound.from_number,
            to_number=callee.number,
            agent_id=intent.agent_id,
            created_at=self._clock(),
            attempt=intent.attempt,
            facts=intent.facts,
        )
        try:
            self._records.create_call(call)
        except ConflictingRecord:
            # The callee answered and the voice webhook recorded the call before we got here: its record
            # stands, but only the dial knows the attempt and the facts the agent needs.
            filled = self._records.fill_outbound_request(call_sid, attempt=intent.attempt, facts=intent.facts)
            logger.info("The voice webhook recorded the call first", extra={"facts_added": filled})

    def _defer(self, intent: DialIntent, when: datetime, reason: str, message: str) -> DialResult:
        name = deferral_name(intent.dial_id)
        later = ScheduledDial(
            agent_id=intent.agent_id, to=intent.to_number, facts=intent.facts, attempt=intent.attempt, dial_id=name
        )
        try:
            self._schedules.dial_at(
                name=name, when=when, dials=[later], description=f"Deferred dial of {intent.agent_id} ({reason})"
            )
        except ScheduleExists:
            logger.info("Deferral already scheduled", extra={"dial_id": intent.dial_id, "schedule": name})
        logger.info("Dial deferred", extra={"dial_id": intent.dial_id, "reason": reason, "until": when.isoformat()})
        return self._settle(
            intent,
            DialStatus.RECEIVED,
            DialStatus.DEFERRED,
            reason=reason,
            message=message,
            next_allowed_at=when,
            deferred_to=name,
        )

    def _settle(self, intent: DialIntent, expected: DialStatus, to: DialStatus, **fields: Any) -> DialResult:
        moved = self._intents.move(intent.dial_id, expected, to, self._clock(), **fields)
        if moved is None:
            return self._current(intent.dial_id)
        return DialResult(moved)

    def _current(self, dial_id: str) -> DialResult:
        """Another delivery of the same dial moved it first: its state is the answer."""
        current = self._intents.get(dial_id)
        if current is None:
            raise RuntimeError(f"dial intent {dial_id} vanished")
        return DialResult(current, replayed=True)

    # -- schedules -----------------------------------------------------------------------------------

    def schedule(self, request: ScheduleRequest) -> ScheduleCreated:
        """Create the schedule of POST /schedules, once every number passes the checks that do not change.

        The do-not-call list and calling hours are checked again at each dial: they change over time.
        """
        outbound = _outbound(self._agents.get(request.agent_id), request.agent_id)
        refusals: list[NumberRefusal] = []
        for index, number in enumerate(request.to):
            try:
                callee = check_callee(number, outbound.allowed_countries)
                if self._do_not_call is not None and self._do_not_call.contains(callee.number):
                    raise DialRefused(RefusalReason.DO_NOT_CALL, "The number is on the do-not-call list.")
            except DialRefused as refusal:
                refusals.append(NumberRefusal(index, refusal.reason, refusal.message))
        if refusals:
            raise ScheduleRefused(refusals)
        name = request.name or new_schedule_name()
        dials = [
            DialRequest(agent_id=request.agent_id, to=number, facts=request.facts, dial_id=f"{name}.{index}")
            for index, number in enumerate(request.to)
        ]
        one_time = request.at is not None
        expression = at_expression(request.at, request.timezone) if request.at is not None else str(request.cron)
        arn = self._schedules.create(
            name=name,
            expression=expression,
            timezone=request.timezone,
            # Stamped with the firing time even when one-time: a name reused after the schedule ran and was
            # deleted must not find the old dial intents and skip its dials as replays.
            input_json=dial_input(dials, stamp_scheduled_time=True),
            one_time=one_time,
            description=f"Switchboard {request.agent_id}: {len(dials)} number(s)",
        )
        logger.info("Schedule created", extra={"schedule": name, "numbers": len(dials), "one_time": one_time})
        return ScheduleCreated(
            schedule_name=name,
            schedule_arn=arn,
            group=self._schedules.group,
            expression=expression,
            timezone=request.timezone,
            one_time=one_time,
            numbers=len(dials),
        )

    # -- retries -------------------------------------------------------------------------------------

    def retry(self, completed: CallCompleted) -> RetryOutcome:
        """Schedule the next attempt of an outbound call that ended busy / no-answer, per its agent's policy.

        Idempotent: the retry schedule is named after the call, and its dial intent after the schedule, so
        a duplicate event meets ConflictException, or, after the schedule ran, the retry's own intent.
        """
        if completed.direction is not CallDirection.OUTBOUND:
            return RetryOutcome(RetryDecision.NOT_OUTBOUND)
        agent = self._agents.get(completed.agent_id)
        if agent is None or agent.outbound is None:
            logger.warning(
                "CallCompleted for an agent that makes no outbound calls", extra={"agent": completed.agent_id}
            )
            return RetryOutcome(RetryDecision.UNKNOWN_AGENT)
        outbound = agent.outbound
        if completed.status.value not in outbound.retry_on:
            return RetryOutcome(RetryDecision.NOT_RETRIED_STATUS)
        call = self._records.get_call(completed.call_sid)
        if call is None:
            logger.error("CallCompleted for a call with no record: cannot retry it")
            return RetryOutcome(RetryDecision.UNKNOWN_CALL)
        attempt = max(call.attempt, completed.attempt)
        if attempt >= outbound.max_attempts:
            logger.info("No retry: attempts exhausted", extra={"attempt": attempt, "max": outbound.max_attempts})
            return RetryOutcome(RetryDecision.ATTEMPTS_EXHAUSTED)
        name = retry_schedule_name(completed.call_sid)
        if self._intents.get(name) is not None:
            # The retry already ran (its schedule deleted itself): a late duplicate event must not call again.
            return RetryOutcome(RetryDecision.ALREADY_SCHEDULED, schedule_name=name)
        when = self._clock() + timedelta(minutes=outbound.retry_after_minutes)
        try:
            callee = check_callee(call.to_number, outbound.allowed_countries)
            when = next_allowed_at(outbound.calling_hours, callee.time_zones, when) or when
        except DialRefused:
            pass  # the retry's dial refuses and records it with the reason
        retry = ScheduledDial(
            agent_id=call.agent_id, to=call.to_number, facts=call.facts, attempt=attempt + 1, dial_id=name
        )
        try:
            self._schedules.dial_at(
                name=name, when=when, dials=[retry], description=f"Retry {attempt + 1} of {call.agent_id}"
            )
        except ScheduleExists:
            logger.info("Retry already scheduled", extra={"schedule": name})
            return RetryOutcome(RetryDecision.ALREADY_SCHEDULED, schedule_name=name)
        logger.info("Retry scheduled", extra={"schedule": name, "attempt": attempt + 1, "at": when.isoformat()})
        return RetryOutcome(RetryDecision.SCHEDULED, schedule_name=name, at=when)
