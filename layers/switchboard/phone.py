"""Phone numbers: the E.164 type every edge validates with, and the mask logs use."""

import re
from typing import Annotated

from pydantic import StringConstraints

E164_PATTERN = r"^\+[1-9]\d{6,14}$"

# A number in E.164 (+ then 7 to 15 digits, no leading zero). Twilio sends numbers in this form.
E164 = Annotated[str, StringConstraints(pattern=E164_PATTERN)]

# Anything that looks like a phone number inside free text: a + and 7-15 digits, or 10-15 digits
# without the +, either possibly split by single spaces, dots or dashes ("+1 555-010-2030"). Dates
# ("2026-11-24", 8 digits) and short numbers stay readable.
_NUMBER_IN_TEXT = re.compile(r"(?<![\w+])(?:\+\d(?:[ .\-]?\d){6,14}|\d(?:[ .\-]?\d){9,14})(?!\w)")


def mask_phone(number: str) -> str:
    """Keep the country prefix and the last two digits, which is enough to tell calls apart in logs."""
    digits = re.sub(r"\D", "", number)
    if len(digits) < 7:
        return number
    prefix = "+" if number.startswith("+") else ""
    return f"{prefix}{digits[:1]}{'*' * (len(digits) - 3)}{digits[-2:]}"


def mask_phones_in_text(text: str) -> str:
    """Mask every phone-number-looking run of digits in a string."""
    return _NUMBER_IN_TEXT.sub(lambda m: mask_phone(m.group(0)), text)
