"""The official SDKs' own models as the judge of what Chorus sends.

The SDKs parse without validating (`construct`), so a message with a field missing still
"parses"; `checked` makes that fail: every field the model requires is there,
nested models included, and the model validates it. (Fields beyond the model's are allowed:
Deepgram's own `Metadata` carries `models` and `model_info`, which the SDK's model lacks.)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def checked(message: Any) -> Any:
    """`message` (an SDK model the SDK built) after checking it against its own model."""
    assert isinstance(message, BaseModel), f"not one of the SDK's models: {message!r}"
    _complete(message)
    model = type(message)
    return model.model_validate(message.model_dump(exclude_unset=True))


def _complete(message: BaseModel) -> None:
    fields = type(message).model_fields
    required = {name for name, field in fields.items() if field.is_required()}
    given = message.model_fields_set
    assert required <= given, f"{type(message).__name__} misses {sorted(required - given)}"
    for name in given:
        value = getattr(message, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                _complete(item)
