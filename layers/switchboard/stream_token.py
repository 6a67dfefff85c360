"""The per-call token that lets a media stream prove which call it belongs to.

The voice webhook (whose Twilio signature was checked) issues a token for its CallSid and passes it as
`<Stream><Parameter name="token">`; Twilio strips query strings from Stream URLs, and parameters come
back in the `start` message's `customParameters`. The streaming service verifies it against the
`start` message's callSid before it touches any audio.

Format: `<base64url payload>.<base64url HMAC-SHA256>` (no padding), payload the compact JSON
`{"sid": CallSid, "exp": epoch seconds, "jti": random nonce}`. About 170 characters, well under
Twilio's 500-character `<Parameter>` value limit.

`verify` checks signature, expiry and call binding; it is stateless, so it cannot tell a first use from
a replay within the TTL. The jti (`StreamClaims.token_id`) is there for the streaming service to make
the token single-use, by recording it (e.g. SET NX with the token's remaining lifetime) on first use.
"""

import base64
import hashlib
import hmac
import json
import re
import secrets
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from switchboard.call import CallSid, valid_call_sid
from switchboard.twilio_signature import TwilioSecurityError

MIN_KEY_BYTES = 32
# Twilio's limit on a <Parameter> value; verify refuses anything longer before doing any work.
MAX_TOKEN_LENGTH = 500

# Prefixed to what is MACed so a signature made with the same key for any other purpose can never
# pass as a stream token, and a future format can change the label instead of colliding with this one.
_MAC_CONTEXT = b"switchboard-stream-token-v1."
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# The last second a datetime can hold: a larger exp would make the claims unrepresentable.
_MAX_EPOCH = int(datetime.max.replace(tzinfo=UTC).timestamp())


class InvalidStreamToken(TwilioSecurityError):
    """A stream token is malformed, forged, expired or issued for another call."""


class StreamClaims(BaseModel):
    """What a verified token vouches for."""

    model_config = ConfigDict(frozen=True)

    call_sid: CallSid
    expires_at: datetime
    token_id: str


class _Payload(BaseModel):
    # Strict: after the MAC check this is our own JSON, so anything unexpected is a bug or a leaked key.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    sid: CallSid
    exp: int = Field(ge=0, le=_MAX_EPOCH)
    jti: Annotated[str, StringConstraints(min_length=16, max_length=64)]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.utcoffset() is None:
        # A naive datetime's timestamp() is read in the host's local zone, so expiry would depend on the machine.
        raise ValueError("now must be timezone-aware")
    return now


class StreamTokenSigner:
    """Issues and verifies stream tokens with one secret key shared by the webhook and the streaming service."""

    def __init__(self, key: bytes, ttl_seconds: int = 120) -> None:
        if not isinstance(key, bytes):
            raise TypeError("key must be bytes")
        if len(key) < MIN_KEY_BYTES:
            # HMAC-SHA256's security rests on the key: shorter than the hash output wastes it.
            raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        self._key = key
        self._ttl = ttl_seconds

    def issue(self, call_sid: str, *, now: datetime | None = None) -> str:
        """A fresh token for `call_sid`, valid for ttl_seconds from `now` (to the second)."""
        sid = valid_call_sid(call_sid)
        expires = int(_aware(now).timestamp()) + self._ttl
        payload = json.dumps({"sid": sid, "exp": expires, "jti": secrets.token_urlsafe(16)}, separators=(",", ":"))
        payload_part = _b64encode(payload.encode("utf-8"))
        return f"{payload_part}.{self._mac(payload_part)}"

    def verify(self, token: str, call_sid: str, *, now: datetime | None = None) -> StreamClaims:
        """The claims of `token` if it is genuine, unexpired and issued for `call_sid`.

        Raises InvalidStreamToken with reason "malformed", "bad signature", "expired" or
        "issued for another call". Does not check single use: see the module docstring.
        """
        checked_at = _aware(now)
        # The token comes from the WebSocket peer: check its shape before spending anything on it.
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not _TOKEN_SHAPE.fullmatch(token):
            raise InvalidStreamToken("malformed")
        payload_part, mac_part = token.split(".")
        # Compared as canonical text, so a re-encoding of the same MAC bytes does not pass either;
        # and before the payload is decoded, so no parser ever sees unauthenticated input.
        if not hmac.compare_digest(self._mac(payload_part), mac_part):
            raise InvalidStreamToken("bad signature")
        try:
            payload = _Payload.model_validate_json(_b64decode(payload_part))
        except ValueError as exc:  # binascii.Error and pydantic's ValidationError are both ValueErrors.
            raise InvalidStreamToken("malformed") from exc
        if checked_at.timestamp() >= payload.exp:
            raise InvalidStreamToken("expired")
        if payload.sid != call_sid:
            raise InvalidStreamToken("issued for another call")
        return StreamClaims(
            call_sid=payload.sid, expires_at=datetime.fromtimestamp(payload.exp, UTC), token_id=payload.jti
        )

    def _mac(self, payload_part: str) -> str:
        digest = hmac.new(self._key, _MAC_CONTEXT + payload_part.encode("ascii"), hashlib.sha256).digest()
        return _b64encode(digest)
