import pytest

from switchboard.settings import (
    DialerSettings,
    SettingsError,
    StatusCallbackSettings,
    StreamingSettings,
    ToolActionsSettings,
    VoiceWebhookSettings,
    load_settings,
)

SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:switchboard/twilio-AbCdEf"

STREAMING_ENV = {
    "AWS_REGION": "eu-west-1",
    "CALLS_TABLE": "switchboard-calls",
    "REDIS_URL": "rediss://cache.example.internal:6379/0",
    "PUBLIC_STREAM_URL": "wss://media.example.com/media",
    "TOOLS_API_URL": "https://abc123.execute-api.eu-west-1.amazonaws.com/prod",
    "TWILIO_SECRET_ARN": SECRET,
    "STREAM_TOKEN_SECRET_ARN": SECRET,
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*STREAMING_ENV, "PUBLIC_API_URL", "EVENT_BUS_NAME", "APPOINTMENTS_TABLE", "PORT"]:
        monkeypatch.delenv(name, raising=False)


def test_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in STREAMING_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PORT", "9000")
    settings = load_settings(StreamingSettings)
    assert settings.port == 9000
    assert str(settings.public_stream_url) == "wss://media.example.com/media"
    assert settings.redis_url.scheme == "rediss"
    assert settings.openai_secret_arn is None


def test_every_missing_variable_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(StreamingSettings)
    message = str(caught.value)
    assert message.startswith("StreamingSettings cannot start")
    for name in STREAMING_ENV:
        assert f"  {name}: is not set" in message


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("REDIS_URL", "http://cache:6379", "scheme should be 'redis' or 'rediss'"),
        ("PUBLIC_STREAM_URL", "https://media.example.com/media", "scheme should be 'wss'"),
        ("TOOLS_API_URL", "http://abc.example.com", "scheme should be 'https'"),
        ("TWILIO_SECRET_ARN", "my-twilio-token", "should match pattern"),
        ("AWS_REGION", "Ireland", "should match pattern"),
        ("PORT", "eighty", "valid integer"),
        ("PORT", "70000", "less than or equal to 65535"),
    ],
)
def test_a_malformed_variable_is_named_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, reason: str
) -> None:
    for key, good in STREAMING_ENV.items():
        monkeypatch.setenv(key, good)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(StreamingSettings)
    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == 1
    assert lines[0].startswith(f"  {name}: ")
    assert reason in lines[0]


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        (
            VoiceWebhookSettings,
            {"PUBLIC_API_URL": "https://voice.example.com", "PUBLIC_STREAM_URL": "wss://media.example.com/media"},
        ),
        (StatusCallbackSettings, {"PUBLIC_API_URL": "https://voice.example.com", "EVENT_BUS_NAME": "calls"}),
        (
            ToolActionsSettings,
            {"APPOINTMENTS_TABLE": "appts", "IDEMPOTENCY_TABLE": "idem", "EVENT_BUS_NAME": "calls"},
        ),
        (
            DialerSettings,
            {
                "PUBLIC_API_URL": "https://voice.example.com/prod",
                "SCHEDULE_GROUP": "switchboard",
                "SCHEDULER_ROLE_ARN": "arn:aws:iam::123456789012:role/scheduler",
                "DIALER_FUNCTION_ARN": "arn:aws:lambda:eu-west-1:123456789012:function:dialer",
            },
        ),
    ],
)
def test_each_deployable_has_its_model(
    monkeypatch: pytest.MonkeyPatch, model: type[VoiceWebhookSettings], extra: dict[str, str]
) -> None:
    with pytest.raises(SettingsError):
        load_settings(model)
    env = {
        "AWS_REGION": "eu-west-1",
        "CALLS_TABLE": "calls",
        "TWILIO_SECRET_ARN": SECRET,
        "STREAM_TOKEN_SECRET_ARN": SECRET,
    }
    for key, value in {**env, **extra}.items():
        monkeypatch.setenv(key, value)
    assert isinstance(load_settings(model), model)
