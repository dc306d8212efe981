"""qa.homeserver.schema_checks: jsonschema.validate with the schema check remembered, otherwise the same."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from qa.homeserver.schema_checks import make_validate, remember_schema_checks

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string", "maxLength": 3}},
          "required": ["n"]}


class _Counter:
    checks = 0


# Made the way Synapse makes its own validator classes (jsonschema.validators.extend), its schema check counted.
CountingValidator: Any = jsonschema.validators.extend(Draft7Validator)
_check_schema = CountingValidator.check_schema


def _counted_check(schema: Any, *args: Any, **kwargs: Any) -> None:
    _Counter.checks += 1
    _check_schema(schema, *args, **kwargs)


CountingValidator.check_schema = staticmethod(_counted_check)


def _validate() -> Any:
    _Counter.checks = 0
    return make_validate(jsonschema.validators.validator_for, best_match)


def test_the_schema_is_checked_once_per_class_and_schema() -> None:
    validate = _validate()
    for n in range(5):
        validate({"n": n}, SCHEMA, cls=CountingValidator)
    assert _Counter.checks == 1
    validate({"n": 1}, {**SCHEMA, "required": []}, cls=CountingValidator)  # another schema: checked
    assert _Counter.checks == 2


def test_an_equal_schema_built_in_another_order_is_not_checked_again() -> None:
    validate = _validate()
    validate({"n": 1}, SCHEMA, cls=CountingValidator)
    validate({"n": 1}, dict(reversed(list(SCHEMA.items()))), cls=CountingValidator)
    assert _Counter.checks == 1


def test_without_jsonschema_nothing_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema -> ImportError
    monkeypatch.setitem(sys.modules, "jsonschema.validators", None)
    assert remember_schema_checks() is False


def test_a_schema_changed_in_place_is_checked_again() -> None:
    validate = _validate()
    schema: dict[str, Any] = {"type": "object"}
    validate({}, schema, cls=CountingValidator)
    schema["minProperties"] = 1
    with pytest.raises(ValidationError):
        validate({}, schema, cls=CountingValidator)
    assert _Counter.checks == 2


@pytest.mark.parametrize("instance", [{"n": 1}, {"n": "x"}, {}, {"n": 1, "s": "toolong"}, [], {"n": 1.5}])
def test_instances_pass_and_fail_exactly_as_with_jsonschema(instance: Any) -> None:
    validate = _validate()
    for _ in range(2):  # the first call checks the schema, the second does not: both answer the same
        try:
            jsonschema.validate(instance, SCHEMA, cls=Draft7Validator)
        except ValidationError as exc:
            with pytest.raises(ValidationError) as ours:
                validate(instance, SCHEMA, cls=Draft7Validator)
            assert (ours.value.message, list(ours.value.path)) == (exc.message, list(exc.path))
        else:
            validate(instance, SCHEMA, cls=Draft7Validator)


def test_without_a_class_the_schema_picks_it_and_extra_arguments_reach_the_validator() -> None:
    validate = _validate()
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "string", "format": "email"}
    validate("a@b.c", schema, format_checker=FormatChecker())
    with pytest.raises(ValidationError):
        validate("not an address", schema, format_checker=FormatChecker())
    validate("not an address", schema)  # no format checker: formats are not asserted, as in jsonschema


def test_a_bad_schema_fails_every_time() -> None:
    validate = _validate()
    for _ in range(2):
        with pytest.raises(SchemaError):
            validate({}, {"type": 12}, cls=CountingValidator)
    assert _Counter.checks == 2


def test_synapse_validates_through_it_once_installed() -> None:
    """In a fresh interpreter (the patch is process-wide): Synapse's own event validator goes through it."""
    code = (
        "import jsonschema\n"
        "from qa.homeserver.schema_checks import remember_schema_checks\n"
        "assert remember_schema_checks()\n"
        "installed = jsonschema.validate\n"
        "assert remember_schema_checks() and jsonschema.validate is installed  # a second call changes nothing\n"
        "from synapse.events.validator import POWER_LEVELS_SCHEMA, POWER_LEVELS_VALIDATOR\n"
        "calls = []\n"
        "orig = POWER_LEVELS_VALIDATOR.check_schema\n"
        "POWER_LEVELS_VALIDATOR.check_schema = classmethod(lambda cls, s: (calls.append(1), orig(s)))\n"
        "for _ in range(3):\n"
        "    jsonschema.validate(instance={'ban': 50}, schema=POWER_LEVELS_SCHEMA, cls=POWER_LEVELS_VALIDATOR)\n"
        "try:\n"
        "    jsonschema.validate(instance={'ban': 'x'}, schema=POWER_LEVELS_SCHEMA, cls=POWER_LEVELS_VALIDATOR)\n"
        "except jsonschema.ValidationError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('an invalid power level passed')\n"
        "assert len(calls) == 1, calls\n"
        "assert jsonschema.validators.validate is jsonschema.validate\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
