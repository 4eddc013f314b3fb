"""Spec problems: what is wrong with a spec, in the words a user needs to fix it.

Every problem names the field as it is written in YAML (`spec.baseModel.uri`), says what is
wrong and, where there is one, the fix. pydantic's errors are translated here, so every kind
reports an invalid spec the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

MAX_PROBLEMS_IN_MESSAGE = 5


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with a spec: which field, what is wrong, how to fix it."""

    field: str
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}" + (f"; {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class InvalidSpec:
    """A spec that cannot be worked on, with every problem found."""

    problems: tuple[SpecProblem, ...]

    @property
    def message(self) -> str:
        shown = "; ".join(str(problem) for problem in self.problems[:MAX_PROBLEMS_IN_MESSAGE])
        hidden = len(self.problems) - MAX_PROBLEMS_IN_MESSAGE
        return shown + (f" (and {hidden} more)" if hidden > 0 else "")


def problems_from_validation_error(
    exc: ValidationError, kind: str, field_of_rule: Mapping[str, str] | None = None
) -> tuple[SpecProblem, ...]:
    """pydantic errors as SpecProblems.

    `field_of_rule` maps the message of a cross-field rule (which pydantic reports on the model,
    not a field) to the field its CEL twin points at.
    """
    return tuple(_problem(error, kind, field_of_rule or {}) for error in exc.errors())


def _problem(error: Mapping[str, Any], kind: str, field_of_rule: Mapping[str, str]) -> SpecProblem:
    raw_message = str(error["msg"])
    message = raw_message.removeprefix("Value error, ")
    location = ".".join(str(part) for part in error["loc"])
    field_path = "spec." + location if location else "spec"
    for rule_message, rule_field in field_of_rule.items():
        if message.startswith(rule_message):
            field_path = rule_field
    if error["type"] == "missing":
        return SpecProblem(field_path, "is required", "add it to the manifest")
    if error["type"] == "extra_forbidden":
        return SpecProblem(
            field_path,
            "is not a known field",
            f"remove it or check its spelling (kubectl explain {kind.lower()}.spec)",
        )
    value = error.get("input")
    if _short_scalar(value) and message == raw_message:
        return SpecProblem(field_path, f"{message} (got {value!r})")
    return SpecProblem(field_path, message)


def _short_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 80
