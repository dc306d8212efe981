"""A regular expression as a pydantic field, compiled when the file is read: mock-provider rules and fault
rules both match on patterns, and a bad one must be reported with the position of the mistake."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator


def compile_regex(value: object) -> object:
    if isinstance(value, str):
        try:
            return re.compile(value)
        except re.error as err:
            # Pydantic's own message would drop the position, which is what the author needs.
            raise ValueError(f"invalid regex {value!r}: {err}") from None
    return value


Regex = Annotated[re.Pattern[str], BeforeValidator(compile_regex)]
