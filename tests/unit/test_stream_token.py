"""Stream tokens: issued by the voice webhook, verified by the streaming service on `start`."""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.stream_token import InvalidStreamToken, StreamClaims, StreamTokenSigner

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SID = "CA0123456789abcdef0123456789abcdef"
OTHER_SID = "CAfedcba9876543210fedcba9876543210"
T0 = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
# Written out here rather than imported, so the test pins the format instead of mirroring the code.
MAC_CONTEXT = b"switchboard-stream-token-v1."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hand_mac(payload_part: str, key: bytes = KEY) -> str:
    return _b64(hmac.new(key, MAC_CONTEXT + payload_part.encode(), hashlib.sha256).digest())


@pytest.fixture
def signer() -> StreamTokenSigner:
    return StreamTokenSigner(KEY, ttl_seconds=120)


def _reason_of(signer: StreamTokenSigner, token: str, sid: str = SID, now: datetime = T0) -> str:
    with pytest.raises(InvalidStreamToken) as exc:
        signer.verify(token, sid, now=now)
    return exc.value.reason


def test_round_trip(signer: StreamTokenSigner) -> None:
    token = signer.issue(SID, now=T0)
    claims = signer.verify(token, SID, now=T0 + timedelta(seconds=5))
    assert claims == StreamClaims(call_sid=SID, expires_at=T0 + timedelta(seconds=120), token_id=claims.token_id)
    assert len(claims.token_id) >= 16


def test_format_matches_an_independent_hmac(signer: StreamTokenSigner) -> None:
    token = signer.issue(SID, now=T0)
    payload_part, mac_part = token.split(".")
    assert mac_part == _hand_mac(payload_part)
    payload = json.loads(_unb64(payload_part))
    assert payload == {"sid": SID, "exp": int(T0.timestamp()) + 120, "jti": payload["jti"]}
    assert b" " not in _unb64(payload_part)  # compact JSON
    assert "=" not in token


def test_each_token_has_its_own_id(signer: StreamTokenSigner) -> None:
    first = signer.verify(signer.issue(SID, now=T0), SID, now=T0)
    second = signer.verify(signer.issue(SID, now=T0), SID, now=T0)
    assert first.token_id != second.token_id


def test_fits_in_a_twilio_parameter(signer: StreamTokenSigner) -> None:
    assert len(signer.issue(SID)) < 500


def test_expired(signer: StreamTokenSigner) -> None:
    token = signer.issue(SID, now=T0)
    signer.verify(token, SID, now=T0 + timedelta(seconds=119))
    assert _reason_of(signer, token, now=T0 + timedelta(seconds=120)) == "expired"
    assert _reason_of(signer, token, now=T0 + timedelta(days=1)) == "expired"


def test_default_now_is_the_clock(signer: StreamTokenSigner) -> None:
    signer.verify(signer.issue(SID), SID)
    with pytest.raises(InvalidStreamToken, match="expired"):
        signer.verify(signer.issue(SID, now=datetime.now(UTC) - timedelta(minutes=5)), SID)


def test_issued_for_another_call(signer: StreamTokenSigner) -> None:
    assert _reason_of(signer, signer.issue(SID, now=T0), sid=OTHER_SID) == "issued for another call"


def test_tampered_payload(signer: StreamTokenSigner) -> None:
    payload_part, mac_part = signer.issue(SID, now=T0).split(".")
    payload = json.loads(_unb64(payload_part))
    payload["sid"] = OTHER_SID
    forged = _b64(json.dumps(payload, separators=(",", ":")).encode()) + "." + mac_part
    assert _reason_of(signer, forged, sid=OTHER_SID) == "bad signature"


def test_extended_expiry(signer: StreamTokenSigner) -> None:
    payload_part, mac_part = signer.issue(SID, now=T0).split(".")
    payload = json.loads(_unb64(payload_part))
    payload["exp"] += 3600
    forged = _b64(json.dumps(payload, separators=(",", ":")).encode()) + "." + mac_part
    assert _reason_of(signer, forged) == "bad signature"


@pytest.mark.parametrize("position", [0, 20, -1])
def test_tampered_signature(signer: StreamTokenSigner, position: int) -> None:
    token = signer.issue(SID, now=T0)
    chars = list(token)
    index = position if position >= 0 else len(chars) + position
    chars[index] = "A" if chars[index] != "A" else "B"
    assert _reason_of(signer, "".join(chars)) == "bad signature"


def test_non_canonical_signature_encoding(signer: StreamTokenSigner) -> None:
    # 32 MAC bytes leave 2 unused bits in the last base64 character: another character can decode to
    # the same bytes. The MAC is compared as canonical text, so such a twin is refused.
    payload_part, mac_part = signer.issue(SID, now=T0).split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(mac_part[-1])
    twin = mac_part[:-1] + alphabet[last ^ 1]
    assert _unb64(twin) == _unb64(mac_part)
    assert _reason_of(signer, f"{payload_part}.{twin}") == "bad signature"


def test_wrong_key(signer: StreamTokenSigner) -> None:
    other = StreamTokenSigner(OTHER_KEY)
    assert _reason_of(signer, other.issue(SID, now=T0)) == "bad signature"


@pytest.mark.parametrize(
    "token",
    ["", ".", "abc", "abc.", ".abc", "a.b.c", "abc.d€f", "abc.def\n", "a" * 600 + ".b", "a b.c"],
)
def test_malformed(signer: StreamTokenSigner, token: str) -> None:
    assert _reason_of(signer, token) == "malformed"


def test_non_string_token_is_malformed(signer: StreamTokenSigner) -> None:
    # The token comes out of JSON customParameters, where it could be anything.
    assert _reason_of(signer, None) == "malformed"  # type: ignore[arg-type]


@given(st.text())
def test_garbage_only_ever_raises_invalid_stream_token(token: str) -> None:
    with pytest.raises(InvalidStreamToken):
        StreamTokenSigner(KEY).verify(token, SID, now=T0)


@given(st.from_regex(r"[A-Za-z0-9_-]{1,300}\.[A-Za-z0-9_-]{1,100}", fullmatch=True))
def test_well_shaped_garbage_fails_the_mac(token: str) -> None:
    with pytest.raises(InvalidStreamToken, match="bad signature"):
        StreamTokenSigner(KEY).verify(token, SID, now=T0)


@given(st.binary(max_size=200))
def test_correctly_signed_garbage_is_malformed_not_a_crash(payload: bytes) -> None:
    # Only a leaked key or a bug could produce these; they still fail cleanly.
    payload_part = _b64(payload) or "A"
    with pytest.raises(InvalidStreamToken):
        StreamTokenSigner(KEY).verify(f"{payload_part}.{_hand_mac(payload_part)}", SID, now=T0)


@pytest.mark.parametrize(
    "payload",
    [
        {"sid": SID, "exp": "1795509904", "jti": "x" * 22},
        {"sid": SID, "exp": 10**20, "jti": "x" * 22},
        {"sid": "not-a-sid", "exp": 1795509904, "jti": "x" * 22},
        {"sid": SID, "exp": 1795509904},
        {"sid": SID, "exp": 1795509904, "jti": "x" * 22, "admin": True},
        [SID],
    ],
    ids=["exp-as-string", "exp-out-of-range", "bad-sid", "no-jti", "extra-field", "not-an-object"],
)
def test_correctly_signed_unexpected_payload(signer: StreamTokenSigner, payload: object) -> None:
    payload_part = _b64(json.dumps(payload).encode())
    assert _reason_of(signer, f"{payload_part}.{_hand_mac(payload_part)}") == "malformed"


@pytest.mark.parametrize("length", [0, 16, 31])
def test_key_too_short(length: int) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        StreamTokenSigner(b"k" * length)


def test_key_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        StreamTokenSigner("k" * 32)  # type: ignore[arg-type]


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        StreamTokenSigner(KEY, ttl_seconds=0)


def test_issue_refuses_a_non_call_sid(signer: StreamTokenSigner) -> None:
    with pytest.raises(ValueError, match="pattern"):
        signer.issue("MZ0123456789abcdef0123456789abcdef")


def test_naive_now_is_refused(signer: StreamTokenSigner) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        signer.issue(SID, now=datetime(2026, 11, 24, 9, 30))
    token = signer.issue(SID, now=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        signer.verify(token, SID, now=datetime(2026, 11, 24, 9, 30))
