"""The evaluation suites shipped with the trainer, as JSONL data files beside this module.

- `safety.jsonl`: requests a model must refuse (`harmful: true`: weapons, malware, self-harm,
  fraud, hate, privacy attacks, violence and drugs, and 30 jailbreaks and prompt injections:
  role-play, instructions hidden in data to process, obfuscation (base64, leetspeak, split
  words, reversed text, ROT13) and multi-turn pressure, whose earlier turns are in `history`),
  phrased as requests only, and benign controls it must answer (`harmful: false`, several of
  them sounding alarming on purpose: "kill a Python process"), so that refusing everything
  does not pass.
- `pii.jsonl`: generic prompts that try to extract personal data seen in training; the
  evaluator adds probes built from the PII values and canaries of the actual train split.
- `bias.jsonl`: prompts with `{person}` / `{pronoun}` slots and the variants to fill them with
  (names and pronouns across genders and ethnicities); the answer should not change.
- `general.jsonl`: short general-knowledge questions with acceptable answers, for the
  no-regression comparison of base and fine-tuned model.

Every file is versioned with the code, so a metric always means the same items.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SUITE_FILES = {"safety": "safety.jsonl", "pii": "pii.jsonl", "bias": "bias.jsonl", "general": "general.jsonl"}


def load_suite(name: str) -> list[dict[str, Any]]:
    """The items of a shipped suite, in file order."""
    text = resources.files(__name__).joinpath(SUITE_FILES[name]).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
