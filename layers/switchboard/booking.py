"""Appointments: which slots an agent may book, and booking them so that no slot is ever taken twice.

Slots. A `BookingPolicy` cuts every opening window of a weekday into slots of `slot_minutes`, counted
from the window's opening time; a slot ends by the window's close. Times are wall-clock times in the
policy's time zone. On the days the clocks change, a wall time the clocks skip (spring forward) or
pass twice (fall back) is never a slot: "1:30 on that Sunday" would name no instant, or two.

Table. One DynamoDB table, keys `pk` / `sk`:

    pk `CALENDAR#<calendar>`  sk `SLOT#<UTC start, 2026-03-03T15:00:00Z>`  one booked appointment
    pk `CALL#<CallSid>`       sk `BOOKING`                                 the appointment a call holds

A slot is taken with a conditional put (`attribute_not_exists`): of two callers racing for it, DynamoDB
lets exactly one have it. The call's `BOOKING` item is written in the same transaction: it holds a call
to one booking, and tells a call that reschedules which appointment it is moving now (after a first
move, the one it moved to). Rescheduling is one transaction too: the new slot is taken only if it is
free and the old one is deleted only if it is booked for this caller's number, or neither happens.
"""

from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import groupby
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from switchboard.action import ActionResult
from switchboard.agent import BookingPolicy, Weekday
from switchboard.call import Call

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        CreateTableInputTypeDef,
        QueryInputTypeDef,
        TransactWriteItemTypeDef,
    )

APPOINTMENTS_PK = "pk"
APPOINTMENTS_SK = "sk"
# Only the call's BOOKING items expire (DynamoDB TTL); appointments stay until the business removes them.
APPOINTMENTS_TTL_ATTRIBUTE = "expires_at"
CALENDAR_PREFIX = "CALENDAR#"
SLOT_PREFIX = "SLOT#"
CALL_PREFIX = "CALL#"
CALL_BOOKING_SK = "BOOKING"
# The call fact naming the appointment an outbound reminder call is about (ISO 8601 with an offset).
APPOINTMENT_FACT = "appointment_start"

CALL_BOOKING_RETENTION = timedelta(days=30)
MAX_SUGGESTIONS = 3
# How many days either side of the requested one are searched for open slots to offer instead.
SUGGESTION_DAYS = 14
# Concurrent transactions on one item can be cancelled with TransactionConflict; a retry then sees the
# winner's write and gets a definite answer.
_TRANSACTION_ATTEMPTS = 3

_WEEKDAYS = list(Weekday)  # Monday first, as date.weekday() counts
_SLOT_KEY_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def appointments_table_definition(name: str) -> "CreateTableInputTypeDef":
    """The `create_table` arguments for the appointments table (TTL on `expires_at` is set separately)."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [
            {"AttributeName": APPOINTMENTS_PK, "KeyType": "HASH"},
            {"AttributeName": APPOINTMENTS_SK, "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": APPOINTMENTS_PK, "AttributeType": "S"},
            {"AttributeName": APPOINTMENTS_SK, "AttributeType": "S"},
        ],
    }


# -- slots ----------------------------------------------------------------------------------------------


class SlotProblem(StrEnum):
    NOT_A_TIME = "not_a_time"
    NONEXISTENT = "nonexistent"
    AMBIGUOUS = "ambiguous"
    PAST = "past"
    TOO_FAR = "too_far"
    CLOSED = "closed"
    MISALIGNED = "misaligned"
    TAKEN = "taken"


class SlotRefused(Exception):
    """A requested start that cannot be booked; `message` says why in a sentence the agent can say."""

    def __init__(self, problem: SlotProblem, message: str, near: datetime | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message
        # Where to look for open slots to offer instead (None: around now).
        self.near = near


def local_time(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a naive wall-clock time names in `zone`; SlotRefused when the clocks skip it or pass it twice."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    # The two readings differ: a gap or a fold. A time in the gap does not survive a round trip through UTC.
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        raise SlotRefused(
            SlotProblem.NONEXISTENT,
            "That time does not exist on that day because the clocks change.",
            near=first,
        )
    raise SlotRefused(
        SlotProblem.AMBIGUOUS,
        "That time happens twice on that day because the clocks change; please pick another time.",
        near=first,
    )


def spoken(moment: datetime) -> str:
    """A time as the agent would say it: "Tuesday, March 3 at 10:30 AM" (in the moment's own zone)."""
    return f"{moment:%A}, {moment:%B} {moment.day} at {_clock(moment)}"


def _clock(moment: datetime) -> str:
    hour = moment.hour % 12 or 12
    return f"{hour}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"


def spoken_list(moments: list[datetime]) -> str:
    """Times in order, grouped by day: "Tuesday, March 3 at 10:00 AM or 11:30 AM; Wednesday, March 4 at 9:00 AM"."""
    days = []
    for _, group in groupby(moments, key=lambda moment: moment.date()):
        same_day = list(group)
        times = [_clock(moment) for moment in same_day]
        said = times[0] if len(times) == 1 else ", ".join(times[:-1]) + " or " + times[-1]
        days.append(f"{same_day[0]:%A}, {same_day[0]:%B} {same_day[0].day} at {said}")
    return "; ".join(days)


def wall_iso(moment: datetime) -> str:
    """A local time the way book_appointment takes it back: 2026-03-03T10:30."""
    return moment.replace(tzinfo=None).isoformat(timespec="minutes")


class SlotGrid:
    """The bookable slots of one BookingPolicy. Pure: no I/O, `now` is passed in."""

    def __init__(self, policy: BookingPolicy) -> None:
        self.policy = policy
        self.zone = ZoneInfo(policy.timezone)
        self.length = timedelta(minutes=policy.slot_minutes)

    def slots_on(self, day: date) -> list[datetime]:
        """Every slot start of a local day, in order, as aware times in the calendar's zone."""
        starts: set[datetime] = set()
        for hours in self.policy.opening_hours.get(_WEEKDAYS[day.weekday()], []):
            wall = datetime.combine(day, hours.open)
            close = datetime.combine(day, hours.close)
            while wall + self.length <= close:
                with suppress(SlotRefused):
                    starts.add(local_time(wall, self.zone))
                wall += self.length
        return sorted(starts, key=lambda start: start.astimezone(UTC))

    def parse(self, text: str) -> datetime:
        """A requested start: local wall time when it has no offset, else the instant it names."""
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise SlotRefused(
                SlotProblem.NOT_A_TIME,
                "That is not a date and time I can read; give the start like 2026-03-03T10:30.",
            ) from None
        if parsed.tzinfo is None:
            return local_time(parsed, self.zone)
        return parsed.astimezone(self.zone)

    def today(self, now: datetime) -> date:
        return now.astimezone(self.zone).date()

    def last_day(self, now: datetime) -> date:
        return self.today(now) + timedelta(days=self.policy.max_days_ahead)

    def check(self, start: datetime, now: datetime) -> None:
        """SlotRefused unless `start` (aware) is the start of a slot that may be booked at `now`."""
        local = start.astimezone(self.zone)
        if local <= now:
            raise SlotRefused(SlotProblem.PAST, "That time has already passed.")
        if local.date() > self.last_day(now):
            raise SlotRefused(
                SlotProblem.TOO_FAR,
                f"I can only book up to {self.policy.max_days_ahead} days ahead.",
                near=local,
            )
        if local in self.slots_on(local.date()):
            return
        # An instant given with its offset can still fall on a wall time the clocks pass twice.
        local_time(local.replace(tzinfo=None), self.zone)
        if self._within_hours(local):
            raise SlotRefused(
                SlotProblem.MISALIGNED,
                f"Appointments are {self.policy.slot_minutes} minutes long and that time is not the start of one.",
                near=local,
            )
        raise SlotRefused(SlotProblem.CLOSED, "That time is outside opening hours.", near=local)

    def _within_hours(self, local: datetime) -> bool:
        wall = local.replace(tzinfo=None)
        return any(
            datetime.combine(wall.date(), hours.open) <= wall < datetime.combine(wall.date(), hours.close)
            for hours in self.policy.opening_hours.get(_WEEKDAYS[wall.weekday()], [])
        )

    def days_around(self, target: date, now: datetime) -> Iterator[date]:
        """Bookable days nearest to `target` first: the day itself (clamped into range), then after, before."""
        first, last = self.today(now), self.last_day(now)
        center = min(max(target, first), last)
        yield center
        for offset in range(1, SUGGESTION_DAYS + 1):
            if (later := center + timedelta(days=offset)) <= last:
                yield later
            if (earlier := center - timedelta(days=offset)) >= first:
                yield earlier

    def suggest(self, near: datetime, now: datetime, taken_on: Callable[[date], set[datetime]]) -> list[datetime]:
        """Up to MAX_SUGGESTIONS open slots nearest to `near`, in time order.

        `taken_on(day)` gives the booked starts of a local day; it is only asked about open days.
        """
        target = near.astimezone(self.zone)
        free: list[datetime] = []
        for day in self.days_around(target.date(), now):
            slots = [slot for slot in self.slots_on(day) if slot > now]
            if not slots:
                continue
            taken = taken_on(day)
            free.extend(slot for slot in slots if slot not in taken)
            if len(free) >= MAX_SUGGESTIONS:
                break
        # Distances in UTC: between two times of one zone Python subtracts wall clocks, off by the DST shift.
        instant = target.astimezone(UTC)
        nearest = sorted(free, key=lambda slot: (abs(slot.astimezone(UTC) - instant), slot.astimezone(UTC)))
        return sorted(nearest[:MAX_SUGGESTIONS], key=lambda slot: slot.astimezone(UTC))


# -- the appointments table ---------------------------------------------------------------------------


def slot_key(start: datetime) -> str:
    return SLOT_PREFIX + start.astimezone(UTC).strftime(_SLOT_KEY_FORMAT)


def _slot_start(key: str) -> datetime:
    return datetime.strptime(key.removeprefix(SLOT_PREFIX), _SLOT_KEY_FORMAT).replace(tzinfo=UTC)


def _serialize(attrs: Mapping[str, Any]) -> dict[str, "AttributeValueTypeDef"]:
    return {key: _SERIALIZER.serialize(value) for key, value in attrs.items()}


def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _DESERIALIZER.deserialize(value) for key, value in item.items()}


@dataclass(frozen=True)
class Holding:
    """The appointment a call holds (booked or moved to), or the one it was called about."""

    calendar: str
    start: datetime


@dataclass(frozen=True)
class BookingRequest:
    start: str
    name: str
    reason: str | None = None


class BookingError(RuntimeError):
    """DynamoDB did not give a definite answer (a transaction kept conflicting)."""


class AppointmentBook:
    """Books appointments into the appointments table under an agent's BookingPolicy. Thread-safe."""

    def __init__(self, table_name: str, client: "DynamoDBClient") -> None:
        self.table_name = table_name
        self.client = client

    def book(self, policy: BookingPolicy, call: Call, request: BookingRequest, now: datetime) -> ActionResult:
        """Book (or, under may_reschedule, move) the caller's appointment at the requested start.

        One booking per call: a second request in the same call is refused, unless the policy lets
        the agent reschedule, in which case it moves the appointment the call holds.
        """
        grid = SlotGrid(policy)
        try:
            start = grid.parse(request.start)
            grid.check(start, now)
        except SlotRefused as refusal:
            return self._refuse(grid, policy.calendar, refusal, now)
        holding = self.holding_of(call.call_sid)
        if holding is None and policy.may_reschedule and (fact := call.facts.get(APPOINTMENT_FACT)):
            holding = self._holding_from_fact(policy.calendar, fact)
            if holding is None:
                return ActionResult.refused("I cannot tell which appointment this call is about, so I cannot move it.")
        if holding is None:
            return self._book_new(grid, call, request, start, now)
        if policy.may_reschedule:
            return self._move(grid, call, request, holding, start, now)
        if holding.calendar == policy.calendar and holding.start == start:
            return self._booked(grid, start, already=True)
        return ActionResult.refused(
            "This call has already booked an appointment, for "
            f"{spoken(holding.start.astimezone(grid.zone))}; I can only book one per call."
        )

    def holding_of(self, call_sid: str) -> Holding | None:
        """The appointment this call booked or moved to, if any."""
        response = self.client.get_item(
            TableName=self.table_name,
            Key=_serialize({APPOINTMENTS_PK: CALL_PREFIX + call_sid, APPOINTMENTS_SK: CALL_BOOKING_SK}),
            ConsistentRead=True,
        )
        if "Item" not in response:
            return None
        item = _deserialize(response["Item"])
        return Holding(calendar=str(item["calendar"]), start=_slot_start(str(item["slot"])))

    def taken_on(self, calendar: str, day: date, zone: ZoneInfo) -> set[datetime]:
        """The booked starts of one local day of a calendar."""
        low = datetime.combine(day, time(0), tzinfo=zone)
        high = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone) - timedelta(seconds=1)
        params: QueryInputTypeDef = {
            "TableName": self.table_name,
            "ConsistentRead": True,
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#pk": APPOINTMENTS_PK, "#sk": APPOINTMENTS_SK},
            "ExpressionAttributeValues": _serialize(
                {":pk": CALENDAR_PREFIX + calendar, ":low": slot_key(low), ":high": slot_key(high)}
            ),
            "ProjectionExpression": "#sk",
        }
        taken: set[datetime] = set()
        while True:
            response = self.client.query(**params)
            taken.update(_slot_start(str(_deserialize(item)[APPOINTMENTS_SK])) for item in response["Items"])
            if not (last := response.get("LastEvaluatedKey")):
                return taken
            params["ExclusiveStartKey"] = last

    def appointment_at(self, calendar: str, start: datetime) -> dict[str, Any] | None:
        """The booked appointment item at a slot, or None when the slot is free."""
        response = self.client.get_item(
            TableName=self.table_name,
            Key=_serialize({APPOINTMENTS_PK: CALENDAR_PREFIX + calendar, APPOINTMENTS_SK: slot_key(start)}),
            ConsistentRead=True,
        )
        return _deserialize(response["Item"]) if "Item" in response else None

    # -- internals -------------------------------------------------------------------------------------

    def _holding_from_fact(self, calendar: str, fact: str) -> Holding | None:
        try:
            start = datetime.fromisoformat(fact)
        except ValueError:
            return None
        if start.tzinfo is None:
            # The dialer's contract is an offset; a naive time would be read in the wrong zone.
            return None
        return Holding(calendar=calendar, start=start)

    def _slot_item(
        self, grid: SlotGrid, call: Call, request: BookingRequest, start: datetime, now: datetime
    ) -> dict[str, Any]:
        item = {
            APPOINTMENTS_PK: CALENDAR_PREFIX + grid.policy.calendar,
            APPOINTMENTS_SK: slot_key(start),
            "calendar": grid.policy.calendar,
            "start": start.astimezone(grid.zone).isoformat(),
            "end": (start.astimezone(grid.zone) + grid.length).isoformat(),
            "customer_number": call.customer_number,
            "call_sid": call.call_sid,
            "agent_id": call.agent_id,
            "name": request.name,
            "booked_at": now.astimezone(UTC).isoformat(),
        }
        if request.reason:
            item["reason"] = request.reason
        return item

    def _call_item(self, call: Call, calendar: str, start: datetime, now: datetime) -> dict[str, Any]:
        return {
            APPOINTMENTS_PK: CALL_PREFIX + call.call_sid,
            APPOINTMENTS_SK: CALL_BOOKING_SK,
            "calendar": calendar,
            "slot": slot_key(start),
            APPOINTMENTS_TTL_ATTRIBUTE: int((now + CALL_BOOKING_RETENTION).timestamp()),
        }

    def _book_new(
        self, grid: SlotGrid, call: Call, request: BookingRequest, start: datetime, now: datetime
    ) -> ActionResult:
        calendar = grid.policy.calendar
        reasons = self._transact(
            [
                {"Put": self._put_new(self._slot_item(grid, call, request, start, now))},
                {"Put": self._put_new(self._call_item(call, calendar, start, now))},
            ]
        )
        if reasons is None:
            return self._booked(grid, start)
        slot_taken, call_holds = (_failed_item(reason) for reason in reasons)
        if slot_taken is not None and slot_taken.get("call_sid") == call.call_sid:
            # Our own earlier booking (a retry after a lost response): the caller has this slot.
            return self._booked(grid, start, already=True)
        if call_holds is not None:
            # Another request of this call booked first, between our read and this write.
            held = _slot_start(str(call_holds["slot"])).astimezone(grid.zone)
            return ActionResult.refused(
                f"This call has already booked an appointment, for {spoken(held)}; I can only book one per call."
            )
        if slot_taken is not None and slot_taken.get("customer_number") == call.customer_number:
            return self._booked(grid, start, already=True)
        refusal = SlotRefused(SlotProblem.TAKEN, "That time is already booked.", near=start)
        return self._refuse(grid, calendar, refusal, now)

    def _move(
        self, grid: SlotGrid, call: Call, request: BookingRequest, holding: Holding, start: datetime, now: datetime
    ) -> ActionResult:
        calendar = grid.policy.calendar
        old = holding.start.astimezone(grid.zone)
        old_key = {APPOINTMENTS_PK: CALENDAR_PREFIX + holding.calendar, APPOINTMENTS_SK: slot_key(holding.start)}
        if holding.calendar == calendar and holding.start == start:
            existing = self.appointment_at(calendar, start)
            if existing is not None and existing.get("customer_number") == call.customer_number:
                return self._booked(grid, start, already=True)
            return self._not_theirs(old)
        reasons = self._transact(
            [
                {
                    "Put": self._put_new(
                        self._slot_item(grid, call, request, start, now) | {"moved_from": slot_key(old)}
                    )
                },
                {
                    "Delete": {
                        "TableName": self.table_name,
                        "Key": _serialize(old_key),
                        "ConditionExpression": "#customer = :customer",
                        "ExpressionAttributeNames": {"#customer": "customer_number"},
                        "ExpressionAttributeValues": _serialize({":customer": call.customer_number}),
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": _serialize(self._call_item(call, calendar, start, now)),
                        # Two moves in one call at once: only the one that saw the current holding goes through.
                        "ConditionExpression": "attribute_not_exists(#pk) OR #slot = :old",
                        "ExpressionAttributeNames": {"#pk": APPOINTMENTS_PK, "#slot": "slot"},
                        "ExpressionAttributeValues": _serialize({":old": slot_key(old)}),
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ]
        )
        if reasons is None:
            return self._booked(grid, start, moved_from=old)
        new_taken = _failed_item(reasons[0])
        if new_taken is not None and new_taken.get("call_sid") == call.call_sid:
            return self._booked(grid, start, already=True)
        if _failed(reasons[0]):
            refusal = SlotRefused(SlotProblem.TAKEN, "That time is already booked.", near=start)
            return self._refuse(grid, calendar, refusal, now)
        if _failed(reasons[1]):
            return self._not_theirs(old)
        if _failed(reasons[2]):
            return ActionResult.refused("The appointment was changed at the same moment; please check it again.")
        raise BookingError(f"transaction cancelled for no reason given: {reasons}")

    def _not_theirs(self, old: datetime) -> ActionResult:
        return ActionResult.refused(
            f"I could not find an appointment for this caller on {spoken(old)}, so I cannot move it."
        )

    def _put_new(self, item: dict[str, Any]) -> dict[str, Any]:
        return {
            "TableName": self.table_name,
            "Item": _serialize(item),
            "ConditionExpression": "attribute_not_exists(#pk)",
            "ExpressionAttributeNames": {"#pk": APPOINTMENTS_PK},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _transact(self, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Run a transaction: None when it went through, else DynamoDB's cancellation reason per item."""
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            try:
                self.client.transact_write_items(TransactItems=cast("list[TransactWriteItemTypeDef]", items))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise
                reasons = cast("list[dict[str, Any]]", cast("dict[str, Any]", exc.response).get("CancellationReasons"))
                if not reasons or len(reasons) != len(items):
                    raise BookingError("DynamoDB cancelled the booking without saying why") from exc
                codes = {str(reason.get("Code")) for reason in reasons}
                if "ConditionalCheckFailed" in codes:
                    return reasons
                if "TransactionConflict" in codes and attempt < _TRANSACTION_ATTEMPTS:
                    continue
                raise BookingError(f"DynamoDB cancelled the booking: {sorted(codes)}") from exc
            return None
        raise BookingError("the booking kept conflicting with concurrent writes")

    def _booked(
        self, grid: SlotGrid, start: datetime, *, already: bool = False, moved_from: datetime | None = None
    ) -> ActionResult:
        local = start.astimezone(grid.zone)
        data: dict[str, Any] = {
            "start": wall_iso(local),
            "end": wall_iso(local + grid.length),
            "timezone": grid.policy.timezone,
            "calendar": grid.policy.calendar,
        }
        if moved_from is not None:
            data["moved_from"] = wall_iso(moved_from)
            return ActionResult.succeeded(
                f"The appointment is moved from {spoken(moved_from)} to {spoken(local)}.", data
            )
        if already:
            return ActionResult.succeeded(f"That appointment is already booked, for {spoken(local)}.", data)
        return ActionResult.succeeded(f"Booked for {spoken(local)}.", data)

    def _refuse(self, grid: SlotGrid, calendar: str, refusal: SlotRefused, now: datetime) -> ActionResult:
        if refusal.problem is SlotProblem.NOT_A_TIME:
            return ActionResult.refused(refusal.message, {"problem": refusal.problem.value})
        near = refusal.near if refusal.near is not None else now
        suggestions = grid.suggest(near, now, lambda day: self.taken_on(calendar, day, grid.zone))
        data = {"problem": refusal.problem.value, "suggestions": [wall_iso(slot) for slot in suggestions]}
        if not suggestions:
            return ActionResult.refused(f"{refusal.message} There are no open slots nearby.", data)
        return ActionResult.refused(f"{refusal.message} Open slots nearby: {spoken_list(suggestions)}.", data)


def _failed(reason: Mapping[str, Any]) -> bool:
    return reason.get("Code") == "ConditionalCheckFailed"


def _failed_item(reason: Mapping[str, Any]) -> dict[str, Any] | None:
    """The item whose condition failed (DynamoDB returns it under ALL_OLD), if it exists."""
    if not _failed(reason) or not reason.get("Item"):
        return None
    return _deserialize(reason["Item"])
