"""The durable record of every call, in one DynamoDB table.

Single-table layout. Everything about a call shares the partition `CALL#<CallSid>`, so one Query reads
a whole call back:

    sk `CALL`              the call itself; the only item carrying the by_agent / by_phone GSI keys
    sk `STATUS#<000042>`   one status callback, by Twilio's SequenceNumber
    sk `TOOL#<id>`         one tool invocation
    sk `TURN#<000007>`     one turn, by index

Each item holds its model's fields as attributes (`model_dump(mode="json")`, fields that are None left
out), plus `item_type`, `at` (the record's own time as fixed-width UTC ISO, sortable as a string) and,
when the store keeps a retention, `expires_at` for DynamoDB's TTL. `expires_at` is counted from the
record's own time rather than from the clock, so a replayed write builds the very same item.

Every write is conditional: Twilio and our own queues deliver at least once, so a replay must be a
no-op, and a different record at a key that is already taken is refused (`ConflictingRecord`) rather
than overwritten. Status callbacks arrive late and twice; the call item only moves forward in
SequenceNumber, so the final record does not depend on the order they came in.

Turns and tool invocations are written without checking that their call is recorded: that would take a
read on every write and double its cost. An orphan item (no `CALL` item in its partition) is stored but
not read back: `timeline` returns None for as long as the call has no call item.
"""

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, DecimalException
from typing import TYPE_CHECKING, Any, cast

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, TypeAdapter

from switchboard.call import AgentId, Call, CallParties, CallStatus, StatusEvent, valid_call_sid
from switchboard.phone import E164
from switchboard.tool import ToolInvocation
from switchboard.turn import Turn

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        CreateTableInputTypeDef,
        QueryInputTypeDef,
        UniversalAttributeValueTypeDef,
    )

# The schema, shared with the CDK construct so both sides name the same attributes and indexes.
TABLE_PK = "pk"
TABLE_SK = "sk"
BY_AGENT_INDEX = "by_agent"
BY_AGENT_PK = "agent_pk"
BY_AGENT_SK = "agent_sk"
BY_PHONE_INDEX = "by_phone"
BY_PHONE_PK = "phone_pk"
BY_PHONE_SK = "phone_sk"
TTL_ATTRIBUTE = "expires_at"

ITEM_TYPE_ATTRIBUTE = "item_type"
AT_ATTRIBUTE = "at"
LAST_SEQUENCE_ATTRIBUTE = "last_sequence"
# Written by the Twilio webhooks on the call item, beside the Call fields (not part of the model).
VOICEMAIL_OUTCOME_ATTRIBUTE = "voicemail_outcome"
EVENT_CLAIM_PREFIX = "event_"

CALL_SK = "CALL"
STATUS_SK_PREFIX = "STATUS#"
TOOL_SK_PREFIX = "TOOL#"
TURN_SK_PREFIX = "TURN#"

# Turn indexes and sequence numbers are zero-padded to this many digits so the sort key orders them.
ORDINAL_DIGITS = 6
MAX_ORDINAL = 10**ORDINAL_DIGITS - 1
MAX_PAGE_LIMIT = 1000

_ITEM_CALL = "call"
_ITEM_STATUS = "status"
_ITEM_TOOL = "tool"
_ITEM_TURN = "turn"

# Sorts after every character a CallSid can hold, so `<end>#~` bounds every sort key stamped `<end>`.
_KEY_CEILING = "~"
_MAX_CURSOR_LENGTH = 2048
_CURSOR_SHAPE = re.compile(r"[A-Za-z0-9_-]+")
_CALL_PK_SHAPE = re.compile(r"CALL#CA[0-9a-f]{32}")
_EVENT_TYPE_SHAPE = re.compile(r"[A-Za-z]{1,64}")

# What create_call itself settles about a call, and so what tells its replay from a different call.
# Status, answered_at, ended_at and the rest are left out: apply_status moves them on afterwards.
_CALL_IDENTITY = (*CallParties.model_fields, "created_at")

_AGENT_ID: TypeAdapter[str] = TypeAdapter(AgentId)
_PHONE: TypeAdapter[str] = TypeAdapter(E164)
_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


class RecordsError(Exception):
    """Base of every error the call records raise on their own account."""


class CallNotFound(RecordsError):
    """The call has no record, so nothing can be attached to it."""

    def __init__(self, call_sid: str) -> None:
        super().__init__(f"no call record for {call_sid}")
        self.call_sid = call_sid


class ConflictingRecord(RecordsError):
    """A different record already sits at this key; writing would have overwritten it."""

    def __init__(self, pk: str, sk: str) -> None:
        super().__init__(f"a different record already exists at {pk} / {sk}")
        self.pk = pk
        self.sk = sk


class CallTimeline(BaseModel):
    """Everything recorded about one call, each list in its natural order.

    The status events are `call.status_history`, by sequence number.
    """

    model_config = ConfigDict(frozen=True)

    call: Call
    turns: list[Turn]
    tools: list[ToolInvocation]


class CallPage(BaseModel):
    """One page of a call listing, newest first.

    Listings read the GSI, which holds the call items only: each call's status_history is empty here;
    `get_call` or `timeline` has it. `cursor` is None on the last page.
    """

    model_config = ConfigDict(frozen=True)

    calls: list[Call]
    cursor: str | None


@dataclass(frozen=True)
class _Index:
    name: str
    pk: str
    sk: str


_BY_AGENT = _Index(BY_AGENT_INDEX, BY_AGENT_PK, BY_AGENT_SK)
_BY_PHONE = _Index(BY_PHONE_INDEX, BY_PHONE_PK, BY_PHONE_SK)


def table_definition(name: str) -> "CreateTableInputTypeDef":
    """The `create_table` arguments for the records table."""
    string_attributes = [TABLE_PK, TABLE_SK, BY_AGENT_PK, BY_AGENT_SK, BY_PHONE_PK, BY_PHONE_SK]
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [
            {"AttributeName": TABLE_PK, "KeyType": "HASH"},
            {"AttributeName": TABLE_SK, "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [{"AttributeName": attr, "AttributeType": "S"} for attr in string_attributes],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": index.name,
                "KeySchema": [
                    {"AttributeName": index.pk, "KeyType": "HASH"},
                    {"AttributeName": index.sk, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in (_BY_AGENT, _BY_PHONE)
        ],
    }


def _utc_iso(moment: datetime) -> str:
    """Fixed-width UTC ISO 8601, so that string order is time order in sort keys and `at`."""
    if moment.utcoffset() is None:
        # A naive time would be read in the host's zone and land in the wrong place in every ordering.
        raise ValueError(f"timestamp must be timezone-aware: {moment!r}")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _ordinal(value: int, what: str) -> str:
    if not 0 <= value <= MAX_ORDINAL:
        # Past the padding width, string order in the sort key would stop matching numeric order.
        raise ValueError(f"{what} must be between 0 and {MAX_ORDINAL}, got {value}")
    return f"{value:0{ORDINAL_DIGITS}d}"


def _call_pk(call_sid: str) -> str:
    return f"CALL#{call_sid}"


def _status_sk(sequence_number: int) -> str:
    return STATUS_SK_PREFIX + _ordinal(sequence_number, "sequence_number")


def _turn_sk(index: int) -> str:
    return TURN_SK_PREFIX + _ordinal(index, "turn index")


def _dynamo_safe(value: Any) -> Any:
    """DynamoDB numbers are decimals: floats go in as the Decimal of their shortest repr, which reads back exact."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {key: _dynamo_safe(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_dynamo_safe(inner) for inner in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _from_dynamo(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(inner) for inner in value]
    return value


def _serialize(attrs: dict[str, Any]) -> dict[str, "AttributeValueTypeDef"]:
    try:
        return {key: _SERIALIZER.serialize(_dynamo_safe(value)) for key, value in attrs.items()}
    except DecimalException as exc:
        raise ValueError(f"a number is outside what DynamoDB can store: {exc!r}") from exc


def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _from_dynamo(_DESERIALIZER.deserialize(value)) for key, value in item.items()}


def _model_fields(model: type[BaseModel], attrs: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attrs.items() if key in model.model_fields}


def _call_from(attrs: dict[str, Any], history: list[StatusEvent]) -> Call:
    fields = _model_fields(Call, attrs)
    fields["status_history"] = history
    return Call.model_validate(fields)


def _call_identity(call: Call) -> dict[str, Any]:
    return {name: getattr(call, name) for name in _CALL_IDENTITY}


def _status_from(attrs: dict[str, Any]) -> StatusEvent:
    return StatusEvent.model_validate(_model_fields(StatusEvent, attrs))


def _turn_from(attrs: dict[str, Any]) -> Turn:
    return Turn.model_validate(_model_fields(Turn, attrs))


def _tool_from(attrs: dict[str, Any]) -> ToolInvocation:
    return ToolInvocation.model_validate(_model_fields(ToolInvocation, attrs))


def _encode_cursor(key: dict[str, str]) -> str:
    payload = json.dumps(key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def _decode_cursor(cursor: str, index: _Index, index_pk: str, low: str, high: str) -> dict[str, str]:
    """Check a cursor came from this very listing before it goes to DynamoDB as ExclusiveStartKey."""
    if len(cursor) > _MAX_CURSOR_LENGTH or not _CURSOR_SHAPE.fullmatch(cursor):
        raise ValueError("invalid cursor: not a cursor returned by a call listing")
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("invalid cursor: not a cursor returned by a call listing") from exc
    expected = {TABLE_PK, TABLE_SK, index.pk, index.sk}
    if not isinstance(key, dict) or set(key) != expected or not all(isinstance(v, str) for v in key.values()):
        raise ValueError("invalid cursor: not a cursor returned by a call listing")
    if not _CALL_PK_SHAPE.fullmatch(key[TABLE_PK]) or key[TABLE_SK] != CALL_SK:
        raise ValueError("invalid cursor: not a cursor returned by a call listing")
    if key[index.pk] != index_pk or not low <= key[index.sk] <= high:
        raise ValueError("invalid cursor: it belongs to a different listing (other key or time range)")
    return cast("dict[str, str]", key)


def _event_attribute(event_type: str) -> str:
    """The call item's attribute that holds the claim on a once-per-call event, e.g. `event_CallCompleted`."""
    if not _EVENT_TYPE_SHAPE.fullmatch(event_type):
        raise ValueError(f"not an event type: {event_type!r}")
    return EVENT_CLAIM_PREFIX + event_type


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class CallRecords:
    """Reads and writes the call records table. Safe to share between threads."""

    def __init__(
        self, table_name: str, client: "DynamoDBClient | None" = None, *, retention_days: int | None = None
    ) -> None:
        if retention_days is not None and retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, got {retention_days}")
        self.table_name = table_name
        self.retention_days = retention_days
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> "DynamoDBClient":
        """The low-level client in use: the one given, or a default one."""
        if self._client is None:
            # boto3's default session is not thread-safe to set up; build the client once, under a lock.
            with self._client_lock:
                if self._client is None:
                    self._client = boto3.client("dynamodb")
        return self._client

    # -- writes --------------------------------------------------------------------------------------

    def create_call(self, call: Call) -> bool:
        """Record a new call. False for a replay, which leaves the record as it was; `ConflictingRecord`
        for a different call at its CallSid.

        A replay is told by the call's parties and `created_at` only, since `apply_status` moves the
        rest on: a create replayed after status updates is still a replay. Status events are recorded
        through `apply_status` only, so there is one path that orders them.
        """
        if call.status_history:
            raise ValueError("a new call is recorded without status events: apply them with apply_status")
        identity = _call_identity(call)
        return self._put_new(
            self._call_item(call), lambda existing: _call_identity(_call_from(existing, [])) == identity
        )

    def put_turn(self, turn: Turn) -> bool:
        """Record a turn. False for a replay of the same turn; `ConflictingRecord` for a different one.

        The call is not checked for (a read would double the write's cost): a turn of an unrecorded call
        is stored, but `timeline` returns None until the call itself is recorded.
        """
        item = self._item(turn.call_sid, _turn_sk(turn.index), _ITEM_TURN, turn.started_at, turn)
        return self._put_new(item, lambda existing: _turn_from(existing) == turn)

    def put_tool_invocation(self, invocation: ToolInvocation) -> bool:
        """Record a tool invocation. False for a replay; `ConflictingRecord` for a different one at its id.

        As with `put_turn`, the call is not checked for: an invocation of an unrecorded call is stored, but
        `timeline` returns None until the call itself is recorded.
        """
        item = self._item(
            invocation.call_sid,
            TOOL_SK_PREFIX + invocation.invocation_id,
            _ITEM_TOOL,
            invocation.requested_at,
            invocation,
        )
        return self._put_new(item, lambda existing: _tool_from(existing) == invocation)

    def apply_status(self, call_sid: str, event: StatusEvent) -> bool:
        """Record a status callback and bring the call's current state up to date.

        The call's status only moves to an event with a higher sequence number than any applied so far,
        so late and repeated callbacks cannot move it back. True if anything new was recorded.
        """
        sid = valid_call_sid(call_sid)
        if not self._call_exists(sid):
            raise CallNotFound(sid)
        recorded = self._put_new(self._status_item(sid, event), lambda existing: _status_from(existing) == event)
        # Run the call update on replays too: if an earlier delivery stopped between the two writes,
        # the retry finishes its work.
        advanced = self._advance_call(sid, event)
        answered = False
        if event.status is CallStatus.IN_PROGRESS and not advanced:
            # A later event got there first; the answer time is still ours to fill in.
            answered = self._fill_answered_at(sid, event)
        return recorded or advanced or answered

    # -- reads ---------------------------------------------------------------------------------------

    def end_conversation(self, call_sid: str, reason: str) -> bool:
        """Mark the conversation over (first reason wins); False when it already was. CallNotFound if no call."""
        ended = self._conditional_update(
            call_sid,
            "SET #ended = :reason",
            "attribute_exists(#pk) AND attribute_not_exists(#ended)",
            {"#pk": TABLE_PK, "#ended": "conversation_ended"},
            {":reason": reason},
        )
        if not ended and not self._call_exists(call_sid):
            raise CallNotFound(call_sid)
        return ended

    def take_stream_resume(self, call_sid: str, limit: int) -> int | None:
        """Count one more resumed stream and return the count, or None when `limit` is reached.

        One atomic update, so two concurrent stream-ended requests cannot both take the last resume.
        """
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_serialize({TABLE_PK: _call_pk(call_sid), TABLE_SK: CALL_SK}),
                UpdateExpression="SET #n = if_not_exists(#n, :zero) + :one",
                ConditionExpression="attribute_exists(#pk) AND (attribute_not_exists(#n) OR #n < :limit)",
                ExpressionAttributeNames={"#pk": TABLE_PK, "#n": "stream_resumes"},
                ExpressionAttributeValues=_serialize({":zero": 0, ":one": 1, ":limit": limit}),
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            if not self._call_exists(call_sid):
                raise CallNotFound(call_sid) from exc
            return None
        return int(_deserialize(response["Attributes"])["stream_resumes"])

    # -- writes for the Twilio webhooks ---------------------------------------------------------------

    def ensure_call(self, call: Call) -> bool:
        """Record a call unless it already is: True when this write created it.

        For writers that stamp `created_at` with their own clock (the voice webhook, a status callback
        that finds no record), so a replay cannot repeat it: a recorded call with the same parties is
        the same call, whenever it was created. `ConflictingRecord` when the parties differ.
        """
        try:
            return self.create_call(call)
        except ConflictingRecord:
            existing = self.get_call(call.call_sid)
            parties = CallParties.model_fields
            if existing is None or any(getattr(existing, name) != getattr(call, name) for name in parties):
                raise
            return False

    def fill_outbound_request(self, call_sid: str, *, attempt: int, facts: dict[str, str]) -> bool:
        """Give a call recorded without them (by the voice webhook, before the dialer) its attempt and facts.

        Only where none are recorded yet; False when they already were (or the call is not recorded)."""
        return self._conditional_update(
            call_sid,
            "SET #attempt = :attempt, #facts = :facts",
            "attribute_exists(#pk) AND (attribute_not_exists(#facts) OR size(#facts) = :none)",
            {"#pk": TABLE_PK, "#attempt": "attempt", "#facts": "facts"},
            {":attempt": attempt, ":facts": facts, ":none": 0},
        )

    def record_status_event(self, call_sid: str, event: StatusEvent) -> bool:
        """Record a status callback whose call is not recorded yet; False for a replay.

        Only the `STATUS#` item: it joins the call's history once the call is recorded, and a later
        `apply_status` of the same event is a replay that brings the call item up to date.
        """
        sid = valid_call_sid(call_sid)
        return self._put_new(self._status_item(sid, event), lambda existing: _status_from(existing) == event)

    def record_answered_by(self, call_sid: str, answered_by: str) -> bool:
        """Who answered (Twilio's AnsweredBy, from answering machine detection), unless already known.

        The final status callback carries the same value and sets it too; whichever comes first stays.
        """
        recorded = self._conditional_update(
            call_sid,
            "SET #answered_by = :answered_by",
            "attribute_exists(#pk) AND attribute_not_exists(#answered_by)",
            {"#pk": TABLE_PK, "#answered_by": "answered_by"},
            {":answered_by": answered_by},
        )
        if not recorded and not self._call_exists(call_sid):
            raise CallNotFound(call_sid)
        return recorded

    def record_voicemail_outcome(self, call_sid: str, outcome: str) -> None:
        """What the voicemail action did on the call ("left_message", "hung_up", or why it failed).

        Stored as `voicemail_outcome` on the call item; the last attempt's outcome wins.
        """
        if not self._conditional_update(
            call_sid,
            "SET #outcome = :outcome",
            "attribute_exists(#pk)",
            {"#pk": TABLE_PK, "#outcome": VOICEMAIL_OUTCOME_ATTRIBUTE},
            {":outcome": outcome},
        ):
            raise CallNotFound(call_sid)

    def claim_event(self, call_sid: str, event_type: str, token: str, now: datetime, stale_after: timedelta) -> bool:
        """Claim the right to publish a once-per-call event; True for the one caller that gets it.

        A claim is a conditional write of `token` on the call item: of concurrent callers exactly one
        succeeds. The winner publishes, then `confirm_event`s, or `release_event`s when publishing
        failed so that a redelivery can claim again. A claim neither confirmed nor released after
        `stale_after` (its holder died) may be taken over: keep it longer than any holder can run.
        """
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_serialize({TABLE_PK: _call_pk(call_sid), TABLE_SK: CALL_SK}),
                UpdateExpression="SET #event = :claim",
                ConditionExpression=(
                    "attribute_exists(#pk) AND (attribute_not_exists(#event)"
                    " OR (attribute_not_exists(#event.#published) AND #event.#claimed < :stale))"
                ),
                ExpressionAttributeNames={
                    "#pk": TABLE_PK,
                    "#event": _event_attribute(event_type),
                    "#published": "published_at",
                    "#claimed": "claimed_at",
                },
                ExpressionAttributeValues=_serialize(
                    {
                        ":claim": {"token": token, "claimed_at": _utc_iso(now)},
                        ":stale": _utc_iso(now - stale_after),
                    }
                ),
            )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            if not self._call_exists(call_sid):
                raise CallNotFound(call_sid) from exc
            return False
        return True

    def confirm_event(self, call_sid: str, event_type: str, token: str, now: datetime) -> bool:
        """Mark a claimed event published; False if the claim is no longer `token`'s."""
        return self._conditional_update(
            call_sid,
            "SET #event.#published = :now",
            "#event.#token = :token",
            {"#event": _event_attribute(event_type), "#published": "published_at", "#token": "token"},
            {":token": token, ":now": _utc_iso(now)},
        )

    def release_event(self, call_sid: str, event_type: str, token: str) -> bool:
        """Give up an unpublished claim so a redelivery can publish; False if it is not `token`'s."""
        return self._conditional_update(
            call_sid,
            "REMOVE #event",
            "#event.#token = :token AND attribute_not_exists(#event.#published)",
            {"#event": _event_attribute(event_type), "#published": "published_at", "#token": "token"},
            {":token": token},
        )

    def event_published_at(self, call_sid: str, event_type: str) -> str | None:
        """When a once-per-call event was confirmed published (UTC ISO), or None."""
        attribute = _event_attribute(event_type)
        response = self.client.get_item(
            TableName=self.table_name,
            Key=_serialize({TABLE_PK: _call_pk(call_sid), TABLE_SK: CALL_SK}),
            ConsistentRead=True,
            ProjectionExpression="#event",
            ExpressionAttributeNames={"#event": attribute},
        )
        claim = _deserialize(response.get("Item", {})).get(attribute)
        return str(claim["published_at"]) if isinstance(claim, dict) and "published_at" in claim else None

    def get_call(self, call_sid: str) -> Call | None:
        """The call with its status history, or None when there is no record of it."""
        sid = valid_call_sid(call_sid)
        # `CALL` < `STATUS#…` < `STATUS#~` < `TOOL#…`: this range is the call item and its status events.
        items = self._query(
            {
                "TableName": self.table_name,
                "ConsistentRead": True,
                "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :low AND :high",
                "ExpressionAttributeNames": {"#pk": TABLE_PK, "#sk": TABLE_SK},
                "ExpressionAttributeValues": _serialize(
                    {":pk": _call_pk(sid), ":low": CALL_SK, ":high": STATUS_SK_PREFIX + _KEY_CEILING}
                ),
            }
        )
        timeline = self._assemble(items)
        return timeline.call if timeline is not None else None

    def timeline(self, call_sid: str, *, page_size: int | None = None) -> CallTimeline | None:
        """Everything recorded about a call, or None when there is no record of the call itself.

        `page_size` caps the items per DynamoDB request; left None, pages are DynamoDB's 1 MB.
        """
        sid = valid_call_sid(call_sid)
        params: QueryInputTypeDef = {
            "TableName": self.table_name,
            "ConsistentRead": True,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": TABLE_PK},
            "ExpressionAttributeValues": _serialize({":pk": _call_pk(sid)}),
        }
        if page_size is not None:
            if page_size < 1:
                raise ValueError(f"page_size must be at least 1, got {page_size}")
            params["Limit"] = page_size
        return self._assemble(self._query(params))

    def calls_of_agent(
        self, agent_id: str, start: datetime, end: datetime, limit: int = 50, cursor: str | None = None
    ) -> CallPage:
        """Calls an agent handled that were created between start and end (both included), newest first."""
        agent = _AGENT_ID.validate_python(agent_id)
        return self._list_calls(_BY_AGENT, f"AGENT#{agent}", start, end, limit, cursor)

    def calls_by_phone(
        self, number: str, start: datetime, end: datetime, limit: int = 50, cursor: str | None = None
    ) -> CallPage:
        """Calls with this customer number (caller inbound, callee outbound) created between start and end."""
        phone = _PHONE.validate_python(number)
        return self._list_calls(_BY_PHONE, f"PHONE#{phone}", start, end, limit, cursor)

    # -- internals -----------------------------------------------------------------------------------

    def _expires_at(self, at: datetime) -> int | None:
        if self.retention_days is None:
            return None
        return int((at + timedelta(days=self.retention_days)).timestamp())

    def _item(self, call_sid: str, sk: str, item_type: str, at: datetime, model: BaseModel) -> dict[str, Any]:
        attrs = model.model_dump(mode="json", exclude_none=True)
        # A StatusEvent has its own `at`; the normalised UTC form replaces it and parses back to the same instant.
        attrs.update(
            {
                TABLE_PK: _call_pk(call_sid),
                TABLE_SK: sk,
                ITEM_TYPE_ATTRIBUTE: item_type,
                AT_ATTRIBUTE: _utc_iso(at),
            }
        )
        expires_at = self._expires_at(at)
        if expires_at is not None:
            attrs[TTL_ATTRIBUTE] = expires_at
        return attrs

    def _call_item(self, call: Call) -> dict[str, Any]:
        attrs = self._item(call.call_sid, CALL_SK, _ITEM_CALL, call.created_at, call)
        # The history lives in the STATUS# items; create_call only takes a call without one.
        del attrs["status_history"]
        created = attrs[AT_ATTRIBUTE]
        attrs.update(
            {
                BY_AGENT_PK: f"AGENT#{call.agent_id}",
                BY_AGENT_SK: f"{created}#{call.call_sid}",
                BY_PHONE_PK: f"PHONE#{call.customer_number}",
                BY_PHONE_SK: f"{created}#{call.call_sid}",
            }
        )
        return attrs

    def _status_item(self, call_sid: str, event: StatusEvent) -> dict[str, Any]:
        return self._item(call_sid, _status_sk(event.sequence_number), _ITEM_STATUS, event.at, event)

    def _put_new(self, item: dict[str, Any], same_record: Callable[[dict[str, Any]], bool]) -> bool:
        """Put an item where none is; when one is, tell a replay (False) from a conflict (raise)."""
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=_serialize(item),
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": TABLE_PK},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            existing = cast("dict[str, Any]", exc.response).get("Item")
            if existing is None:
                # DynamoDB returns the item whose existence failed the condition; without it we cannot
                # tell a replay from a conflict, and guessing either way could lose a record.
                raise RecordsError(f"DynamoDB refused {item[TABLE_PK]} / {item[TABLE_SK]} without the item") from exc
            if not same_record(_deserialize(existing)):
                raise ConflictingRecord(item[TABLE_PK], item[TABLE_SK]) from exc
            return False
        return True

    def _call_exists(self, call_sid: str) -> bool:
        response = self.client.get_item(
            TableName=self.table_name,
            Key=_serialize({TABLE_PK: _call_pk(call_sid), TABLE_SK: CALL_SK}),
            ConsistentRead=True,
            ProjectionExpression="#pk",
            ExpressionAttributeNames={"#pk": TABLE_PK},
        )
        return "Item" in response

    def _advance_call(self, call_sid: str, event: StatusEvent) -> bool:
        dumped = event.model_dump(mode="json")
        names = {"#pk": TABLE_PK, "#status": "status", "#seq": LAST_SEQUENCE_ATTRIBUTE}
        values: dict[str, Any] = {":status": dumped["status"], ":seq": event.sequence_number}
        sets = ["#status = :status", "#seq = :seq"]
        if event.status is CallStatus.IN_PROGRESS:
            names["#answered_at"] = "answered_at"
            values[":at"] = dumped["at"]
            sets.append("#answered_at = if_not_exists(#answered_at, :at)")
        if event.status.is_final:
            names["#ended_at"] = "ended_at"
            values[":at"] = dumped["at"]
            sets.append("#ended_at = :at")
            for field in ("duration_s", "answered_by"):
                if dumped[field] is not None:
                    names[f"#{field}"] = field
                    values[f":{field}"] = dumped[field]
                    sets.append(f"#{field} = :{field}")
        return self._conditional_update(
            call_sid,
            "SET " + ", ".join(sets),
            "attribute_exists(#pk) AND (attribute_not_exists(#seq) OR #seq < :seq)",
            names,
            values,
        )

    def _fill_answered_at(self, call_sid: str, event: StatusEvent) -> bool:
        return self._conditional_update(
            call_sid,
            "SET #answered_at = :at",
            "attribute_exists(#pk) AND attribute_not_exists(#answered_at)",
            {"#pk": TABLE_PK, "#answered_at": "answered_at"},
            {":at": event.model_dump(mode="json")["at"]},
        )

    def _conditional_update(
        self, call_sid: str, update: str, condition: str, names: dict[str, str], values: dict[str, Any]
    ) -> bool:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_serialize({TABLE_PK: _call_pk(call_sid), TABLE_SK: CALL_SK}),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_serialize(values),
            )
        except ClientError as exc:
            if _error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _query(self, params: "QueryInputTypeDef") -> Iterator[dict[str, Any]]:
        """Every item the query matches, following LastEvaluatedKey across pages."""
        request = dict(params)
        while True:
            response = self.client.query(**cast("QueryInputTypeDef", request))
            for item in response["Items"]:
                yield _deserialize(item)
            last_key = response.get("LastEvaluatedKey")
            if not last_key:
                return
            request["ExclusiveStartKey"] = cast("dict[str, UniversalAttributeValueTypeDef]", last_key)

    def _assemble(self, items: Iterator[dict[str, Any]]) -> CallTimeline | None:
        call_attrs: dict[str, Any] | None = None
        turns: list[Turn] = []
        tools: list[ToolInvocation] = []
        statuses: list[StatusEvent] = []
        for attrs in items:
            item_type = attrs.get(ITEM_TYPE_ATTRIBUTE)
            if item_type == _ITEM_CALL:
                call_attrs = attrs
            elif item_type == _ITEM_TURN:
                turns.append(_turn_from(attrs))
            elif item_type == _ITEM_TOOL:
                tools.append(_tool_from(attrs))
            elif item_type == _ITEM_STATUS:
                statuses.append(_status_from(attrs))
            # Other item types are left alone, so a newer writer's additions do not break older readers.
        if call_attrs is None:
            return None
        turns.sort(key=lambda turn: turn.index)
        tools.sort(key=lambda tool: (tool.requested_at, tool.invocation_id))
        statuses.sort(key=lambda event: event.sequence_number)
        return CallTimeline(call=_call_from(call_attrs, statuses), turns=turns, tools=tools)

    def _list_calls(
        self, index: _Index, index_pk: str, start: datetime, end: datetime, limit: int, cursor: str | None
    ) -> CallPage:
        if not 1 <= limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_LIMIT}, got {limit}")
        low = _utc_iso(start)
        high = _utc_iso(end) + "#" + _KEY_CEILING
        if low > high:
            raise ValueError("start is after end")
        params: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": index.name,
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#pk": index.pk, "#sk": index.sk},
            "ExpressionAttributeValues": _serialize({":pk": index_pk, ":low": low, ":high": high}),
            "ScanIndexForward": False,
            # One more than asked tells whether another page exists, so the last page has no cursor.
            "Limit": limit + 1,
        }
        if cursor is not None:
            start_key = _decode_cursor(cursor, index, index_pk, low, high)
            params["ExclusiveStartKey"] = _serialize(dict(start_key))
        response = self.client.query(**params)
        items = [_deserialize(item) for item in response["Items"]]
        next_key: dict[str, str] | None = None
        if len(items) > limit:
            items = items[:limit]
            next_key = {name: items[-1][name] for name in (TABLE_PK, TABLE_SK, index.pk, index.sk)}
        elif "LastEvaluatedKey" in response:
            # DynamoDB stopped at its 1 MB page before reaching the limit: there may be more.
            next_key = {name: str(value) for name, value in _deserialize(response["LastEvaluatedKey"]).items()}
        return CallPage(
            calls=[_call_from(item, []) for item in items],
            cursor=_encode_cursor(next_key) if next_key is not None else None,
        )
