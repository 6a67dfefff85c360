from pathlib import Path

import pytest
import yaml

from switchboard.agent import AgentConfigError, AgentDirectory, load_agent
from switchboard.call import CallDirection
from switchboard.tool import ToolName

AGENTS = Path(__file__).resolve().parents[2] / "agents"


def _write(directory: Path, agent_id: str, data: dict[str, object], kb: dict[str, str] | None = None) -> Path:
    path = directory / f"{agent_id}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    for name, text in (kb or {}).items():
        file = directory / agent_id / "kb" / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")
    return path


def _minimal(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "id": "front",
        "name": "Front desk",
        "directions": ["inbound"],
        "voice": {"id": "Joanna"},
        "greeting": "Hello.",
        "system_prompt": "Be brief.",
        "phone_numbers": ["+15550100200"],
    }
    data.update(overrides)
    return data


def test_shipped_agents_load() -> None:
    directory = AgentDirectory.load(AGENTS)
    clinic = directory.get("clinic-receptionist")
    reminder = directory.get("appointment-reminder")
    assert clinic is not None
    assert reminder is not None
    assert directory.answering("+15550100200") is clinic
    assert clinic.tools.enabled == set(ToolName)
    assert clinic.tools.transfer_call is not None
    assert clinic.tools.transfer_call.allow == {"front_desk": "+15550100100"}
    assert all(path.is_file() for path in clinic.knowledge_base)
    assert reminder.directions == [CallDirection.OUTBOUND]
    assert reminder.outbound is not None
    assert reminder.outbound.voicemail.action == "leave_message"
    assert ToolName.TRANSFER_CALL not in reminder.tools.enabled
    assert reminder.tools.book_appointment is not None
    assert reminder.tools.book_appointment.may_reschedule is True
    assert clinic.tools.book_appointment is not None
    assert clinic.tools.book_appointment.may_reschedule is False


def test_defaults(tmp_path: Path) -> None:
    agent = load_agent(_write(tmp_path, "front", _minimal()))
    assert agent.llm.temperature == 0.4
    assert agent.llm.max_tokens == 150
    assert agent.voice.engine == "neural"
    assert agent.tools.enabled == frozenset()


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"llm": {"temperature": 3}}, "llm.temperature", "less than or equal to 2"),
        ({"llm": {"max_tokens": 0}}, "llm.max_tokens", "greater than or equal to 1"),
        ({"voice": {"id": "Joanna", "engine": "turbo"}}, "voice.engine", "Input should be"),
        ({"phone_numbers": ["555-0100"]}, "phone_numbers.0", "should match pattern"),
        ({"greting": "Hi"}, "greting", "Extra inputs are not permitted"),
        ({"tools": {"transfer_call": {"allow": {"desk": "19005550100"}}}}, "tools.transfer_call.allow.desk", "pattern"),
        ({"tools": {"transfer_call": {"allow": {}}}}, "tools.transfer_call.allow", "at least 1"),
        ({"tools": {"launch_rocket": {}}}, "tools.launch_rocket", "Extra inputs"),
        (
            {"tools": {"book_appointment": {"calendar": "c", "timezone": "Mars/Olympus", "opening_hours": {}}}},
            "tools.book_appointment.timezone",
            "unknown time zone",
        ),
        (
            {
                "tools": {
                    "book_appointment": {
                        "calendar": "c",
                        "timezone": "Europe/Paris",
                        "opening_hours": {"mon": [{"open": "17:00", "close": "09:00"}]},
                    }
                }
            },
            "tools.book_appointment.opening_hours.mon.0",
            "is not after open",
        ),
        ({"phone_numbers": []}, "(top level)", "inbound agent needs phone_numbers"),
        ({"directions": ["outbound"]}, "(top level)", "outbound agent needs an outbound section"),
        (
            {
                "directions": ["outbound"],
                "outbound": {
                    "from_number": "+15550100300",
                    "allowed_countries": ["US"],
                    "voicemail": {"action": "leave_message"},
                },
            },
            "outbound.voicemail",
            "leave_message needs a message",
        ),
        (
            {"outbound": {"from_number": "+15550100300", "allowed_countries": ["usa"]}},
            "outbound.allowed_countries.0",
            "",
        ),
    ],
)
def test_invalid_field_names_file_field_and_reason(
    tmp_path: Path, overrides: dict[str, object], field: str, reason: str
) -> None:
    path = _write(tmp_path, "front", _minimal(**overrides))
    with pytest.raises(AgentConfigError) as caught:
        load_agent(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"  {field}: " in message
    assert reason in message


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "front.yaml"
    path.write_text("id: front\nvoice: [unclosed\n", encoding="utf-8")
    with pytest.raises(AgentConfigError, match=r"front\.yaml: not valid YAML"):
        load_agent(path)


def test_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "front.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(AgentConfigError, match="must be a mapping"):
        load_agent(path)


def test_id_must_match_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "front", _minimal(id="back"))
    with pytest.raises(AgentConfigError, match="does not match the file name 'front'"):
        load_agent(path)


def test_knowledge_base_files_resolved_and_checked(tmp_path: Path) -> None:
    path = _write(tmp_path, "front", _minimal(knowledge_base=["faq.md"]), kb={"faq.md": "Open 9 to 5."})
    agent = load_agent(path)
    assert agent.knowledge_base == [(tmp_path / "front" / "kb" / "faq.md").resolve()]

    missing = _write(tmp_path, "front", _minimal(knowledge_base=["nope.md"]))
    with pytest.raises(AgentConfigError, match=r"knowledge_base\.0: .*nope\.md does not exist"):
        load_agent(missing)

    escaping = _write(tmp_path, "front", _minimal(knowledge_base=["../../front.yaml"]))
    with pytest.raises(AgentConfigError, match=r"knowledge_base\.0: .* is outside"):
        load_agent(escaping)


def test_directory_rejects_a_number_answered_twice(tmp_path: Path) -> None:
    _write(tmp_path, "front", _minimal())
    _write(tmp_path, "back", _minimal(id="back"))
    with pytest.raises(AgentConfigError) as caught:
        AgentDirectory.load(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'front.yaml'}: phone_numbers.0: +15550100200 is already answered by {tmp_path / 'back.yaml'}"
    )


def test_directory_rejects_an_id_defined_twice(tmp_path: Path) -> None:
    agent = load_agent(_write(tmp_path, "front", _minimal()))
    with pytest.raises(AgentConfigError, match=r"copy\.yaml: id: 'front' is already defined in .*front\.yaml"):
        AgentDirectory({tmp_path / "front.yaml": agent, tmp_path / "copy.yaml": agent})


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="no agent files"):
        AgentDirectory.load(tmp_path)


def test_providers_default_to_aws_and_are_chosen_per_agent(tmp_path: Path) -> None:
    default = load_agent(_write(tmp_path, "front", _minimal()))
    assert (default.listening.provider, default.voice.provider, default.llm.provider) == (
        "transcribe",
        "polly",
        "openai",
    )
    assert default.listening.vocabulary is None
    assert default.knowledge_search == "every_turn"

    offline = load_agent(
        _write(
            tmp_path,
            "front",
            _minimal(
                listening={"provider": "pocketsphinx"},
                voice={"provider": "espeak", "id": "en-us"},
                llm={"provider": "scripted"},
                knowledge_search="tool",
            ),
        )
    )
    assert (offline.listening.provider, offline.voice.provider, offline.llm.provider) == (
        "pocketsphinx",
        "espeak",
        "scripted",
    )
    assert offline.knowledge_search == "tool"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("listening", {"provider": "whisper"}, r"listening\.provider"),
        ("listening", {"vocabulary": "bad name!"}, r"listening\.vocabulary"),
        ("voice", {"id": "Joanna", "provider": "azure"}, r"voice\.provider"),
        ("knowledge_search", "sometimes", r"knowledge_search"),
    ],
)
def test_unknown_providers_are_named(tmp_path: Path, field: str, value: object, message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        load_agent(_write(tmp_path, "front", _minimal(**{field: value})))
