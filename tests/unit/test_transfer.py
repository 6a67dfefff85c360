"""The transfer policy of switchboard.transfer: allow-list names only, and no costly or foreign numbers."""

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from switchboard.agent import TransferPolicy
from switchboard.transfer import TransferRefused, entry_name, number_problem, transfer_target

US_OURS = "+12125550100"
FICTIONAL_OURS = "+15550100200"  # the repository's agents use 555-01xx numbers, which have no region
UK_OURS = "+442071838750"
FR_OURS = "+33140000000"


def example(region: str, kind: int) -> str:
    number = phonenumbers.example_number_for_type(region, kind)
    assert number is not None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


@pytest.mark.parametrize(
    ("target", "ours"),
    [
        ("+12125550123", US_OURS),
        ("+15550100100", FICTIONAL_OURS),
        ("+14155550100", FICTIONAL_OURS),
        ("+18005550123", US_OURS),  # toll-free costs the caller nothing
        (example("GB", PhoneNumberType.MOBILE), UK_OURS),
    ],
)
def test_a_number_in_our_own_country_is_fine(target: str, ours: str) -> None:
    assert number_problem(target, ours) is None


@pytest.mark.parametrize(
    ("target", "ours", "problem"),
    [
        ("+19005550123", US_OURS, "a premium-rate or shared-cost number"),
        ("+19005550123", FICTIONAL_OURS, "a premium-rate or shared-cost number"),
        (example("GB", PhoneNumberType.PREMIUM_RATE), UK_OURS, "a premium-rate or shared-cost number"),
        (example("FR", PhoneNumberType.SHARED_COST), FR_OURS, "a premium-rate or shared-cost number"),
        (example("GB", PhoneNumberType.PERSONAL_NUMBER), UK_OURS, "a premium-rate or shared-cost number"),
        ("+442071838750", US_OURS, "a number in another country"),
        ("+12125550123", UK_OURS, "a number in another country"),
        # +1 is shared: Canada and Jamaica are other countries for a New York number.
        ("+16135550123", US_OURS, "a number in another country"),
        ("+18765550123", US_OURS, "a number in another country"),
        ("+1555", US_OURS, "not a possible phone number"),
        ("front desk", US_OURS, "not a phone number"),
    ],
)
def test_costly_foreign_and_impossible_numbers_are_named(target: str, ours: str, problem: str) -> None:
    assert number_problem(target, ours) == problem


@pytest.mark.parametrize("said", ["front_desk", "Front desk", " FRONT-DESK ", "front  desk"])
def test_an_entry_is_named_loosely(said: str) -> None:
    assert entry_name(said) == "front_desk"


def test_only_allow_list_names_reach_a_number_and_the_number_is_checked_too() -> None:
    policy = TransferPolicy(allow={"front_desk": "+15550100100", "hotline": "+19005550123"})

    assert transfer_target(policy, "Front desk", FICTIONAL_OURS) == ("front_desk", "+15550100100")
    for said in ("+15550100100", "15550100100", "the manager", "front_desk; +19005550123", ""):
        with pytest.raises(TransferRefused, match=r"^I can only transfer to one of: front_desk, hotline\.$"):
            transfer_target(policy, said, FICTIONAL_OURS)
    with pytest.raises(TransferRefused, match="The hotline line is not available for transfers"):
        transfer_target(policy, "hotline", FICTIONAL_OURS)
