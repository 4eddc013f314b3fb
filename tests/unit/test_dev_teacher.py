"""The dev cluster's stand-in teacher (hack/devcluster/teacher.py): every record it writes is new
and valid for what the prompt asks, tickets or SQL, so the examples' synthetic data is honest."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from devcluster import teacher  # noqa: E402


def ask(t: teacher.Teacher, prompt: str, count: int) -> list[dict]:
    body = {"model": "m", "messages": [{"role": "user", "content": f"{prompt}\n\nWrite {count} new records (batch 1)."}]}
    return [json.loads(line) for line in t.complete(body)["choices"][0]["message"]["content"].splitlines()]


def test_a_prompt_asking_for_sql_gets_distinct_questions_with_queries_that_run():
    t = teacher.Teacher()
    prompt = 'Write a question about orders(id, customer, total, created_at) as "instruction" and the SQLite query as "output".'
    records = [r for _ in range(6) for r in ask(t, prompt, 100)]
    assert len(records) == 600 and len({r["instruction"] for r in records}) == 600
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE orders (id INTEGER, customer TEXT, total REAL, created_at TEXT)")
    db.execute("INSERT INTO orders VALUES (1, 'Acme', 120.5, '2024-03-02')")
    for record in records:
        assert set(record) == {"instruction", "output"}
        db.execute(record["output"]).fetchall()  # every query is valid SQLite


def test_other_prompts_get_support_tickets():
    records = ask(teacher.Teacher(), "Write a support ticket and its summary.", 20)
    assert len({r["input"] for r in records}) == 20
    assert all(set(json.loads(r["output"])) == {"summary", "priority"} for r in records)
