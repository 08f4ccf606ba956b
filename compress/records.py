"""The base of every typed record compress writes (report.json, a pass's details,
sensitivity.json, the batch summary): strict when written, tolerant of newer keys when read.

Built in code, a record takes only the fields it declares: a key added, renamed or of another
type is an error at once, and the JSON Schema says `additionalProperties: false`. Read back from a
file with `read(data)`, keys a newer minor version added are ignored, so a reader takes any
report of its major version.

Serialized, an optional field that is None, or an empty list or dict by default, is left out (a
figure that was not measured, a detail a pass did not report), as in the files earlier versions
wrote; a required field is always there, null where it has no value.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    model_serializer,
    model_validator,
)

READING = "reading"  # the validation context key that makes a record tolerant of unknown keys
MAX_INT = 2**63 - 1  # any integer read back: files (sizes, counts) hold nothing larger

# Figures that cannot be negative: a file that says otherwise was not written by compress.
Count = Annotated[int, Field(ge=0)]
Amount = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[int, Field(ge=1)]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _ignore_newer_keys(cls, data: Any, info: ValidationInfo) -> Any:
        """Read from a file (`read`): drop the keys this version does not declare."""
        reading = bool(info.context and info.context.get(READING))
        if reading and isinstance(data, dict) and cls.model_config.get("extra") == "forbid":
            known = {field.alias or name for name, field in cls.model_fields.items()}
            return {key: value for key, value in data.items() if key in known}
        return data

    @classmethod
    def read(cls, data: Any) -> Self:
        """The record in `data` (parsed JSON), ignoring keys a newer minor version added;
        pydantic's ValidationError (a ValueError) when it does not fit, ValueError for an
        integer beyond 64 bits anywhere in it (no figure is that large; arithmetic on one
        overflows a float)."""
        _check_integers(data)
        return cls.model_validate(data, context={READING: True})

    @model_serializer(mode="wrap")
    def _leave_out_unset_options(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name, field in type(self).model_fields.items():
                if field.is_required():
                    continue
                default = field.get_default(call_default_factory=True)
                empty = [None] + ([default] if default in ([], {}) else [])
                for key in {name, field.alias or name}:
                    if key in data and any(data[key] == value for value in empty):
                        del data[key]
        return data

    def written(self) -> dict[str, Any]:
        """The record as JSON values (see the module's docstring)."""
        return self.model_dump(mode="json")


def _check_integers(data: Any) -> None:
    """Every integer in parsed JSON within +-MAX_INT, walked without recursion."""
    pending: list[tuple[str, Any]] = [("", data)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, dict):
            pending += [(f"{where}.{key}" if where else str(key), v) for key, v in value.items()]
        elif isinstance(value, list):
            pending += [(f"{where}.{index}", v) for index, v in enumerate(value)]
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise ValueError(f"{where or 'the value'}: an integer of {len(str(value))} digits")
