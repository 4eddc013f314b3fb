"""The three record formats, their validation, and their conversion for the trainers.

- instruction: {"instruction": str, "input": str (optional), "output": str}
- chat:        {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
- preference:  {"prompt": str, "chosen": str, "rejected": str}

Any other fields (a category to balance on, an id) are carried through untouched.
A record of the wrong *shape* (not an object, a field of the wrong type, unknown keys only) is
a data error that names the line: the file is broken and someone must fix it. A record of the
right shape with *missing or empty content* is merely incomplete: prepare drops it and counts
it, because real exports always contain a few.

For training, every SFT record becomes a conversational prompt/completion pair (the completion
is the last assistant turn), so completion-only loss works with any chat template, and every
preference record becomes a conversational prompt/chosen/rejected triple for DPO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .exitcodes import DataError

FORMATS = ("instruction", "chat", "preference")
ROLES = ("system", "user", "assistant")
EXPECTED = {
    "instruction": "an object with instruction/output (and optional input)",
    "chat": "an object with messages: [{role, content}, ...]",
    "preference": "an object with prompt/chosen/rejected",
}


def detect_format(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    if "messages" in value:
        return "chat"
    if "chosen" in value or "rejected" in value:
        return "preference"
    if "instruction" in value or "output" in value:
        return "instruction"
    return None


def _expect_text(location: str, record: dict, field: str, fmt: str, *, optional: bool = False) -> None:
    value = record.get(field)
    if value is None and (optional or field not in record):
        return  # missing content is "incomplete", found later; only wrong types are errors here
    if not isinstance(value, str):
        raise DataError(
            f"dataset {location}: field {field!r} is {type(value).__name__}, expected a string "
            f"(expected {EXPECTED[fmt]})"
        )


def validate(location: str, value: Any, fmt: str) -> dict:
    """Check the shape of one record in format `fmt`; return it as a dict or raise DataError."""
    if not isinstance(value, dict):
        raise DataError(f"dataset {location}: is {type(value).__name__}, not a JSON object (expected {EXPECTED[fmt]})")
    found = detect_format(value)
    if found != fmt:
        keys = ", ".join(sorted(map(str, value))) or "no keys"
        raise DataError(
            f"dataset {location}: has {keys} but the dataset format is {fmt} (expected "
            f"{EXPECTED[fmt]}); fix the record or set dataset.format"
        )
    if fmt == "instruction":
        for field in ("instruction", "output"):
            _expect_text(location, value, field, fmt)
        _expect_text(location, value, "input", fmt, optional=True)
    elif fmt == "preference":
        for field in ("prompt", "chosen", "rejected"):
            _expect_text(location, value, field, fmt)
    else:
        messages = value.get("messages")
        if not isinstance(messages, list):
            raise DataError(f"dataset {location}: field 'messages' is {type(messages).__name__}, expected a list (expected {EXPECTED[fmt]})")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content", ""), str):
                raise DataError(
                    f"dataset {location}: messages[{i}] must be an object with string content "
                    f"(expected {EXPECTED[fmt]})"
                )
            if message.get("role") not in ROLES:
                raise DataError(
                    f"dataset {location}: messages[{i}] has role {message.get('role')!r}; use one of "
                    f"{', '.join(ROLES)}"
                )
    return value


def incomplete_reason(record: dict, fmt: str) -> str | None:
    """'empty' / 'incomplete' / 'identical_preference' for records to drop, None to keep."""
    texts = [t for _, t in text_fields(record, fmt)]
    if not any(t.strip() for t in texts):
        return "empty"
    if fmt == "instruction":
        if not (record.get("instruction") or "").strip() or not (record.get("output") or "").strip():
            return "incomplete"
    elif fmt == "preference":
        if not all((record.get(f) or "").strip() for f in ("prompt", "chosen", "rejected")):
            return "incomplete"
        if record["chosen"].strip() == record["rejected"].strip():
            return "identical_preference"
    else:
        messages = record["messages"]
        if any(not (m.get("content") or "").strip() for m in messages):
            return "incomplete"
        if not any(m["role"] == "assistant" for m in messages) or not any(m["role"] == "user" for m in messages):
            return "incomplete"
    return None


def text_fields(record: dict, fmt: str) -> list[tuple[str, str]]:
    """(field path, text) for every piece of training text in the record."""
    if fmt == "instruction":
        names = ("instruction", "input", "output")
        return [(n, record[n]) for n in names if isinstance(record.get(n), str)]
    if fmt == "preference":
        names = ("prompt", "chosen", "rejected")
        return [(n, record[n]) for n in names if isinstance(record.get(n), str)]
    return [(f"messages[{i}].content", m.get("content") or "") for i, m in enumerate(record["messages"])]


def map_text(record: dict, fmt: str, change: Callable[[str], str]) -> dict:
    """A copy of the record with `change` applied to every training text."""
    out = dict(record)
    if fmt == "chat":
        out["messages"] = [{**m, "content": change(m.get("content") or "")} for m in record["messages"]]
    else:
        for name, text in text_fields(record, fmt):
            out[name] = change(text)
    return out


def joined_text(record: dict, fmt: str) -> str:
    return "\n".join(t for _, t in text_fields(record, fmt))


def to_sft_example(record: dict, fmt: str) -> dict:
    """Conversational prompt/completion pair; the completion is the last assistant turn."""
    if fmt == "instruction":
        prompt = record["instruction"].strip()
        if (record.get("input") or "").strip():
            prompt = f"{prompt}\n\n{record['input'].strip()}"
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": record["output"]}],
        }
    if fmt == "chat":
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return {"prompt": messages[:last], "completion": [messages[last]]}
    raise ValueError(f"format {fmt} is not an SFT format")


def to_preference_example(record: dict) -> dict:
    return {
        "prompt": [{"role": "user", "content": record["prompt"]}],
        "chosen": [{"role": "assistant", "content": record["chosen"]}],
        "rejected": [{"role": "assistant", "content": record["rejected"]}],
    }
