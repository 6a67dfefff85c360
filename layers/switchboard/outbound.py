"""Who an outbound agent may call, and when: the checks every dial passes before Twilio is asked.

A callee must be a valid number (phonenumbers, not only the E.164 shape) of one of the agent's allowed
countries, not a premium-rate line, absent from the do-not-call list, and the moment must be inside the
agent's calling hours in the callee's local time.

The local time comes from the number itself (phonenumbers' time zone data): we never know where the
person really is, only where the number belongs. A number that maps to several zones (a toll-free
number, a mobile number of a large country) is called only when every one of those zones is inside the
hours, since any of them may be the callee's. A number with no known zone is not called at all: that
it is inside the hours cannot be shown.

Everything here takes `now` as an argument, so the policy is tested at any instant without a clock.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import boto3
import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as number_timezones

from switchboard.agent import Hours

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import CreateTableInputTypeDef

# The do-not-call table: one item per number that must never be called, keyed by its E.164 form.
DO_NOT_CALL_PK = "phone"

# How far ahead next_allowed_at looks for a moment inside the hours in every zone. A week covers
# every weekly pattern; a number whose zones never overlap inside the hours has no such moment at all.
_HORIZON_DAYS = 8

# phonenumbers' answer when it knows no zone for a number.
_UNKNOWN_ZONE = "Etc/Unknown"


class RefusalReason(StrEnum):
    """Why a dial was refused, as the API reports it (`error`) and the dial intent records it."""

    UNKNOWN_AGENT = "unknown_agent"
    NOT_AN_OUTBOUND_AGENT = "not_an_outbound_agent"
    INVALID_NUMBER = "invalid_number"
    COUNTRY_NOT_ALLOWED = "country_not_allowed"
    PREMIUM_RATE_NUMBER = "premium_rate_number"
    UNKNOWN_TIME_ZONE = "unknown_time_zone"
    DO_NOT_CALL = "do_not_call"
    OUTSIDE_CALLING_HOURS = "outside_calling_hours"


class DialRefused(Exception):
    """A policy said no. `next_allowed_at` is set for calling hours when a later moment would do."""

    def __init__(self, reason: RefusalReason, message: str, next_allowed_at: datetime | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.next_allowed_at = next_allowed_at


@dataclass(frozen=True)
class Callee:
    """A number that passed the static checks, with the zones its local time is read in."""

    number: str
    country: str
    time_zones: tuple[ZoneInfo, ...]


def check_callee(number: str, allowed_countries: Collection[str]) -> Callee:
    """The checks that do not change with time or lists: valid, allowed country, not premium, known zone.

    Raises DialRefused. Messages name the country or type, never the number (they reach logs).
    """
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        raise DialRefused(RefusalReason.INVALID_NUMBER, f"Not a phone number: {exc._msg}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise DialRefused(RefusalReason.INVALID_NUMBER, "Not a valid, dialable phone number.")
    country = phonenumbers.region_code_for_number(parsed) or ""
    if country not in allowed_countries:
        allowed = ", ".join(sorted(allowed_countries))
        raise DialRefused(
            RefusalReason.COUNTRY_NOT_ALLOWED,
            f"This agent may call numbers of {allowed} only; this number belongs to {country or 'no country'}.",
        )
    if phonenumbers.number_type(parsed) in (PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST):
        # The callee is not billed, we are: an agent never calls a line that charges per minute.
        raise DialRefused(RefusalReason.PREMIUM_RATE_NUMBER, "Premium-rate and shared-cost numbers are not called.")
    zones: list[ZoneInfo] = []
    for name in number_timezones.time_zones_for_number(parsed):
        if name == _UNKNOWN_ZONE:
            continue
        try:
            zones.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            # A zone phonenumbers knows and this tz database does not: the hours cannot be read in it.
            raise DialRefused(
                RefusalReason.UNKNOWN_TIME_ZONE, f"The number's time zone {name} is not known here."
            ) from None
    if not zones:
        raise DialRefused(
            RefusalReason.UNKNOWN_TIME_ZONE,
            "The number's time zone is unknown, so calling hours cannot be checked for it.",
        )
    return Callee(
        number=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        country=country,
        time_zones=tuple(zones),
    )


def within_hours(hours: Hours, zones: Sequence[ZoneInfo], at: datetime) -> bool:
    """True when `at` is inside [open, close) in every zone."""
    if at.utcoffset() is None:
        raise ValueError(f"at must be timezone-aware: {at!r}")
    return all(hours.open <= at.astimezone(zone).time() < hours.close for zone in zones)


def _openings(zone: ZoneInfo, day: date, opening: time) -> set[datetime]:
    """The instants (UTC) at which the wall clock of `zone` reaches `opening` on `day`.

    Usually one. Two when the clocks go back over it (both passes count). When the clocks jump over it,
    the window opens at the jump itself: the first instant whose wall clock is past `opening`.
    """
    wall = datetime.combine(day, opening)
    instants = {wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)}
    exact = {instant for instant in instants if instant.astimezone(zone).replace(tzinfo=None) == wall}
    if exact:
        return exact
    # Skipped by a jump forward. Read with the offset from before the jump, the wall time lands just
    # after it; step back to the jump itself (transitions fall on whole minutes).
    jump = max(instants)
    step = timedelta(minutes=1)
    while (jump - step).astimezone(zone).replace(tzinfo=None) >= wall:
        jump -= step
    return {jump}


def _clock_changes(zone: ZoneInfo, start: datetime, end: datetime) -> set[datetime]:
    """The instants (UTC, whole seconds) in (start, end] at which the UTC offset of `zone` changes."""
    changes: set[datetime] = set()
    hour = timedelta(hours=1)
    probe = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while probe < end:
        before, after = probe.astimezone(zone).utcoffset(), (probe + hour).astimezone(zone).utcoffset()
        if before != after:
            # Bisect (in seconds) for the first instant read with the new offset.
            low, high = 0, 3600
            while high - low > 1:
                middle = (low + high) // 2
                if (probe + timedelta(seconds=middle)).astimezone(zone).utcoffset() == before:
                    low = middle
                else:
                    high = middle
            change = probe + timedelta(seconds=high)
            if start < change <= end:
                changes.add(change)
        probe += hour
    return changes


def next_allowed_at(hours: Hours, zones: Sequence[ZoneInfo], at: datetime) -> datetime | None:
    """The first moment at or after `at` inside the hours in every zone, in UTC; None if none within a week.

    Where the windows of all zones overlap, the overlap starts at `at`, at some zone's opening time, or
    at some zone's clock change (falling back can put a wall clock straight back inside the hours,
    without passing the opening time), so those are the only candidates to try, earliest first.
    """
    if within_hours(hours, zones, at):
        return at.astimezone(UTC)
    candidates: set[datetime] = set()
    for zone in zones:
        local_day = at.astimezone(zone).date()
        for offset in range(_HORIZON_DAYS + 1):
            candidates |= {
                opening for opening in _openings(zone, local_day + timedelta(days=offset), hours.open) if opening > at
            }
        candidates |= _clock_changes(zone, at, at + timedelta(days=_HORIZON_DAYS + 1))
    for candidate in sorted(candidates):
        if within_hours(hours, zones, candidate):
            return candidate
    return None


def check_calling_hours(hours: Hours, callee: Callee, now: datetime) -> None:
    """DialRefused(OUTSIDE_CALLING_HOURS) with the next allowed moment, unless `now` is inside the hours."""
    if within_hours(hours, callee.time_zones, now):
        return
    window = f"{hours.open:%H:%M}-{hours.close:%H:%M}"
    zones = ", ".join(zone.key for zone in callee.time_zones)
    following = next_allowed_at(hours, callee.time_zones, now)
    if following is None:
        raise DialRefused(
            RefusalReason.OUTSIDE_CALLING_HOURS,
            f"Calling hours {window} are never open in all of the number's time zones ({zones}) at once.",
        )
    raise DialRefused(
        RefusalReason.OUTSIDE_CALLING_HOURS,
        f"Outside calling hours {window} in the callee's local time ({zones}); "
        f"next allowed at {following.isoformat()}.",
        next_allowed_at=following,
    )


def do_not_call_table_definition(name: str) -> "CreateTableInputTypeDef":
    """The `create_table` arguments for the do-not-call table (pk `phone`, E.164)."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": DO_NOT_CALL_PK, "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": DO_NOT_CALL_PK, "AttributeType": "S"}],
    }


class DoNotCallList:
    """Numbers that must never be called, whichever agent or schedule asks."""

    def __init__(self, table_name: str, client: "DynamoDBClient | None" = None) -> None:
        self.table_name = table_name
        self._client = client

    @property
    def client(self) -> "DynamoDBClient":
        if self._client is None:
            self._client = boto3.client("dynamodb")
        return self._client

    def contains(self, number: str) -> bool:
        # Consistent read: a number added a moment ago (an opt-out during the last call) must count.
        response = self.client.get_item(
            TableName=self.table_name,
            Key={DO_NOT_CALL_PK: {"S": number}},
            ConsistentRead=True,
            ProjectionExpression="#pk",
            ExpressionAttributeNames={"#pk": DO_NOT_CALL_PK},
        )
        return "Item" in response

    def add(self, number: str, *, reason: str, at: datetime | None = None) -> None:
        """List a number (idempotent: listing it again refreshes the reason and time)."""
        moment = (at or datetime.now(UTC)).astimezone(UTC)
        self.client.put_item(
            TableName=self.table_name,
            Item={DO_NOT_CALL_PK: {"S": number}, "reason": {"S": reason}, "added_at": {"S": moment.isoformat()}},
        )
