"""Phone numbers: the E.164 type every edge validates with, and the mask logs use."""

import re
from typing import Annotated

from pydantic import StringConstraints

E164_PATTERN = r"^\+[1-9]\d{6,14}$"

# A number in E.164 (+ then 7 to 15 digits, no leading zero). Twilio sends numbers in this form.
E164 = Annotated[str, StringConstraints(pattern=E164_PATTERN)]

# Separators people and forms put between digit groups: spaces, dots, dashes, parentheses.
_SEP = r"[\s.\-()]{0,3}"
# Anything that looks like a phone number inside free text:
# - a + (or its URL encoding %2B, as in a logged webhook body) and 7-15 digits, whatever stands before;
# - 10-15 digits without it, not glued to a word, so a CallSid's hex or an id stays readable.
# Dates and times ("2026-11-24 08:39", the colon ends it) and short numbers stay readable too.
_NUMBER_IN_TEXT = re.compile(
    rf"(?:\+|%2[Bb]){_SEP}\d(?:{_SEP}\d){{6,14}}(?!\d)"
    rf"|(?<![\w+])\(?\d(?:{_SEP}\d){{9,14}}(?![\w:])"
)


def mask_phone(number: str) -> str:
    """Keep the first and the last two digits, which is enough to tell calls apart in logs."""
    digits = re.sub(r"\D", "", number.replace("%2B", "+").replace("%2b", "+"))
    if len(digits) < 7:
        return number
    prefix = "+" if number.startswith(("+", "%2B", "%2b")) else ""
    return f"{prefix}{digits[:1]}{'*' * (len(digits) - 3)}{digits[-2:]}"


def mask_phones_in_text(text: str) -> str:
    """Mask every phone-number-looking run of digits in a string."""
    return _NUMBER_IN_TEXT.sub(lambda m: mask_phone(m.group(0)), text)
