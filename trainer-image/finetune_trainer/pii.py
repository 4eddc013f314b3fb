"""Detection and redaction of personal data and secrets in training text.

Training data leaks into model weights, and a fine-tuned model can repeat what it saw, so the
trainer looks for common PII and credentials before anything is trained: e-mail addresses,
phone numbers, payment card numbers (Luhn-checked, so order numbers rarely match), US social
security numbers, IPv4/IPv6 addresses (validated with `ipaddress`) and API keys/tokens (AWS
access keys, `Bearer` and `sk-` style tokens, GitHub tokens, and high-entropy values assigned
to key/token/secret/password names). Findings carry only the type and position, never the
matched value, so reports and error messages cannot leak what they found.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from dataclasses import dataclass

PLACEHOLDERS = {
    "EMAIL": "[EMAIL]",
    "PHONE": "[PHONE]",
    "CREDIT_CARD": "[CREDIT_CARD]",
    "SSN": "[SSN]",
    "IP_ADDRESS": "[IP_ADDRESS]",
    "API_KEY": "[API_KEY]",
}


@dataclass(frozen=True)
class Finding:
    type: str
    start: int
    end: int


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(c / len(value) * math.log2(c / len(value)) for c in counts.values())


def _always(_: re.Match[str]) -> bool:
    return True


def _card_ok(m: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", m.group(0))
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _ipv4_ok(m: re.Match[str]) -> bool:
    try:
        ipaddress.IPv4Address(m.group(0))
    except ValueError:
        return False
    return True


def _ipv6_ok(m: re.Match[str]) -> bool:
    candidate = m.group(0)
    # Clock times and ratios ("10:30:00") are not addresses: an address has at least 8 groups
    # or a "::" compression, and ipaddress rejects the rest.
    if "::" not in candidate and candidate.count(":") < 7:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _generic_secret_ok(m: re.Match[str]) -> bool:
    value = m.group("value")
    # Plain words ("password = changeme-later-please") are low entropy; keys look random.
    return len(value) >= 16 and _entropy(value) >= 3.5 and bool(re.search(r"\d", value))


# (type, pattern, check). Order is priority: an earlier match wins an overlapping span, so a
# token that contains digits is reported as API_KEY rather than as a phone number inside it.
_DETECTORS: list[tuple[str, re.Pattern[str], object]] = [
    ("API_KEY", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"), _always),
    ("API_KEY", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b"), _always),
    ("API_KEY", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b"), _always),
    ("API_KEY", re.compile(r"\bsk-(?:[A-Za-z0-9_-]{2,20}-)?[A-Za-z0-9_-]{20,}"), _always),
    ("API_KEY", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), _always),
    ("API_KEY", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{16,}=*"), _always),
    (
        "API_KEY",
        re.compile(
            r"(?i)\b[\w-]*(?:api[_-]?key|secret|token|passw(?:or)?d|access[_-]?key|private[_-]?key)"
            r"[\w-]*[\"']?\s*[:=]\s*[\"']?(?P<value>[A-Za-z0-9/+_\-.=]{16,})"
        ),
        _generic_secret_ok,
    ),
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), _always),
    ("CREDIT_CARD", re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), _card_ok),
    ("SSN", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"), _always),
    ("IP_ADDRESS", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), _ipv4_ok),
    ("IP_ADDRESS", re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), _ipv6_ok),
    # Phone numbers: international (+CC ...) or North-American style with separators; bare
    # digit runs are left alone because ids and amounts look the same.
    ("PHONE", re.compile(r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}\b"), _always),
    ("PHONE", re.compile(r"(?<![\w-])\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b"), _always),
]


def find_pii(text: str, types: frozenset[str] | set[str] | None = None) -> list[Finding]:
    """Non-overlapping findings in `text`, in order of position."""
    taken: list[Finding] = []
    for pii_type, pattern, check in _DETECTORS:
        if types is not None and pii_type not in types:
            continue
        for m in pattern.finditer(text):
            if not check(m):  # type: ignore[operator]
                continue
            start, end = m.span()
            if pii_type == "API_KEY" and "value" in pattern.groupindex:
                start, end = m.span("value")  # keep the key name readable, redact the value
            if any(start < f.end and f.start < end for f in taken):
                continue
            taken.append(Finding(pii_type, start, end))
    return sorted(taken, key=lambda f: f.start)


def redact(text: str, findings: list[Finding]) -> str:
    """`text` with every finding replaced by its placeholder."""
    pieces: list[str] = []
    cursor = 0
    for f in findings:
        pieces.append(text[cursor : f.start])
        pieces.append(PLACEHOLDERS[f.type])
        cursor = f.end
    pieces.append(text[cursor:])
    return "".join(pieces)
