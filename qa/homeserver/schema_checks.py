"""Inside the embedded Synapse: jsonschema checks each schema once, not once per validated instance.

`jsonschema.validate(instance, schema, cls=...)` first checks the *schema* against its metaschema, then the
instance against the schema. Synapse calls it for every power-levels event (each createRoom), every event with
`m.mentions` (most messages here) and every /sync with an inline filter, always with the same few module-level
schemas. The schema check is most of the cost: for the power-levels schema ~21 of ~24 ms per call on a loaded
2-core machine, and createRoom spent ~40 % of its CPU there (py-spy of a fast run, issue 29).

`remember_schema_checks()` replaces `jsonschema.validate` with one that runs the schema check the first time it
meets a (validator class, schema) pair and skips it after that pair passed once; the instance is validated exactly
as before, with the same errors (`best_match`). A schema that fails its check is checked (and fails) every time.
The pair is keyed by the schema's canonical JSON, so a schema changed in place is checked again.

Only the standard library at import time: the harness imports this module's package without importing jsonschema.
"""

from __future__ import annotations

import json
from typing import Any

_PATCHED = "_matrix_qa_remembers_schema_checks"


def remember_schema_checks() -> bool:
    """Install the remembering `jsonschema.validate` (idempotent). False when jsonschema is not importable."""
    try:
        import jsonschema
        import jsonschema.validators
    except ImportError:
        return False
    if getattr(jsonschema.validate, _PATCHED, False):
        return True
    validate = make_validate(jsonschema.validators.validator_for, jsonschema.exceptions.best_match)
    jsonschema.validate = validate
    jsonschema.validators.validate = validate
    return True


def make_validate(validator_for: Any, best_match: Any) -> Any:
    """`jsonschema.validate` with the schema check remembered per (class, canonical schema); pure given its inputs."""
    checked: set[tuple[Any, str]] = set()

    def validate(instance: Any, schema: Any, cls: Any = None, *args: Any, **kwargs: Any) -> None:
        if cls is None:
            cls = validator_for(schema)
        key = (cls, json.dumps(schema, sort_keys=True, default=repr))
        if key not in checked:
            cls.check_schema(schema)
            checked.add(key)
        error = best_match(cls(schema, *args, **kwargs).iter_errors(instance))
        if error is not None:
            raise error

    setattr(validate, _PATCHED, True)
    return validate
