"""PII detection: each type found, look-alikes left alone, redaction placeholders."""

from __future__ import annotations

import pytest

from finetune_trainer.pii import find_pii, redact


@pytest.mark.parametrize(
    "text, types",
    [
        ("write to jane.doe+tickets@example.co.uk today", ["EMAIL"]),
        ("call me on +1 415 555 0132", ["PHONE"]),
        ("call (415) 555-0199 after 5", ["PHONE"]),
        ("card 4111 1111 1111 1111 expires soon", ["CREDIT_CARD"]),
        ("card 4111-1111-1111-1111", ["CREDIT_CARD"]),
        ("my ssn is 123-45-6789", ["SSN"]),
        ("server 10.0.12.7 is down", ["IP_ADDRESS"]),
        ("server 2001:db8::8a2e:370:7334 is down", ["IP_ADDRESS"]),
        ("aws key AKIAIOSFODNN7EXAMPLE leaked", ["API_KEY"]),
        ("token ghp_0123456789abcdefghijABCDEFGHIJ0123456789", ["API_KEY"]),
        ("use sk-proj-4f9aQ2xZ8LmN1pR7tV3wY6bC0dE5gH", ["API_KEY"]),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc123", ["API_KEY"]),
        ('config: api_key = "Zx8Kq2Lm9Pw4Rt7Yv1Bn3"', ["API_KEY"]),
        ("mail a@b.io and c@d.io from 192.168.0.1", ["EMAIL", "EMAIL", "IP_ADDRESS"]),
    ],
)
def test_detects(text, types):
    assert [f.type for f in find_pii(text)] == types


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 (fails the Luhn check)",
        "meeting at 10:30:00 on 2024-01-02",
        "version 999.1.1.1 of the tool",
        "password = correct-horse-battery",
        "ticket 123456789 costs 1,234.56",
        "plain text about a customer login",
    ],
)
def test_leaves_look_alikes_alone(text):
    assert find_pii(text) == []


def test_redaction_uses_placeholders_and_keeps_the_rest():
    text = "Contact jane@example.com or 123-45-6789, key AKIAIOSFODNN7EXAMPLE."
    assert redact(text, find_pii(text)) == "Contact [EMAIL] or [SSN], key [API_KEY]."


def test_type_filter():
    text = "jane@example.com 10.0.0.1"
    assert [f.type for f in find_pii(text, {"IP_ADDRESS"})] == ["IP_ADDRESS"]
