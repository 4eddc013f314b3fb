"""Data preparation: formats, validation errors, filters, PII policies, dedup, balance, split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_trainer import exitcodes
from finetune_trainer.config import parse_config
from finetune_trainer.exitcodes import DataError
from finetune_trainer.prepare import main as prepare_main
from finetune_trainer.prepare import prepare_dataset
from finetune_trainer.testing import json_format_records, preference_records

from .conftest import save_config, write_jsonl

INSTRUCTION = [{"instruction": f"Say hello number {i}", "input": "", "output": f"Hello there, friend {i}!"} for i in range(20)]
CHAT = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Question {i} about login"}, {"role": "assistant", "content": f"Answer {i}: reset it."}]}
    for i in range(20)
]
PREFERENCE = preference_records(20)


def read_split(config, name):
    path = config.prepared_path / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def prepared(config_factory, source, **sections):
    config = parse_config(config_factory(source, **sections))
    return config, prepare_dataset(config)


def write_json_array(path: Path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2))
    return path


def write_parquet(path: Path, records):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def write_saved_dataset(path: Path, records):
    import datasets

    datasets.Dataset.from_list(records).save_to_disk(str(path))
    return path


@pytest.mark.parametrize(
    "records, fmt, method",
    [(INSTRUCTION, "instruction", "sft"), (CHAT, "chat", "sft"), (PREFERENCE, "preference", "dpo")],
    ids=["instruction", "chat", "preference"],
)
@pytest.mark.parametrize(
    "writer, filename",
    [(write_jsonl, "d.jsonl"), (write_json_array, "d.json"), (write_parquet, "d.parquet")],
    ids=["jsonl", "json", "parquet"],
)
def test_formats_and_file_types_are_detected(config_factory, tmp_path, records, fmt, method, writer, filename):
    source = writer(tmp_path / "src" / filename, records)
    config, report = prepared(config_factory, source, method=method)
    assert report["format"] == fmt
    assert report["counts"]["read"] == report["counts"]["final"] == 20
    assert report["splits"] == {"train": 14, "validation": 4, "test": 2}
    assert read_split(config, "train")[0].keys() == records[0].keys()


def test_saved_dataset_directory_and_directory_of_files(config_factory, tmp_path):
    source = write_saved_dataset(tmp_path / "saved", INSTRUCTION)
    _, report = prepared(config_factory, source)
    assert report["counts"]["read"] == 20 and report["format"] == "instruction"

    write_jsonl(tmp_path / "many" / "b.jsonl", INSTRUCTION[10:])
    write_jsonl(tmp_path / "many" / "a.jsonl", INSTRUCTION[:10])
    _, report = prepared(config_factory, tmp_path / "many")
    assert report["counts"]["read"] == 20


def test_fsspec_sources_are_read_in_sorted_order():
    import fsspec

    from finetune_trainer.sources import _read_s3

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/ds/b.jsonl", b'{"instruction": "b", "output": "2"}\n')
    fs.pipe("/bucket/ds/a.jsonl", b'{"instruction": "a", "output": "1"}\n')
    records = list(_read_s3("memory://bucket/ds"))
    assert [r.value["instruction"] for r in records] == ["a", "b"]
    assert records[0].location.endswith("a.jsonl: line 1")


def test_format_override_rejects_other_records(config_factory, tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", INSTRUCTION[:3] + CHAT[:1])
    config = parse_config(config_factory(source))
    with pytest.raises(DataError, match=r"d\.jsonl: line 4: has messages but the dataset format is instruction"):
        prepare_dataset(config)


BAD_LINES = [
    ("{not json", r"line 3 is not JSON"),
    ("[1, 2]", r"line 3: is list, not a JSON object"),
    ('{"instruction": "x", "output": 5}', r"line 3: field 'output' is int, expected a string"),
    ('{"question": "x", "answer": "y"}', r"line 3: has answer, question but the dataset format is instruction"),
]


@pytest.mark.parametrize("bad, message", BAD_LINES, ids=["not-json", "not-object", "wrong-type", "unknown-keys"])
def test_malformed_record_names_file_and_line(config_factory, tmp_path, bad, message):
    source = tmp_path / "data" / "train.jsonl"
    source.parent.mkdir(parents=True)
    source.write_text("\n".join(json.dumps(r) for r in INSTRUCTION[:2]) + "\n" + bad + "\n")
    config = parse_config(config_factory(source))
    with pytest.raises(DataError, match=f"{source}: {message}"):
        prepare_dataset(config)


def test_malformed_data_exits_with_data_error_and_leaves_no_output(config_factory, tmp_path, capsys):
    source = tmp_path / "data" / "train.jsonl"
    write_jsonl(source, INSTRUCTION[:16])
    with source.open("a") as handle:
        handle.write("{broken\n")
    config = config_factory(source)
    code = prepare_main(["--config", str(save_config(tmp_path, config))])
    assert code == exitcodes.DATA_ERROR == 3
    assert f"{source}: line 17 is not JSON" in capsys.readouterr().err
    out = Path(config["output"]["dir"])
    assert not out.exists() or not any(out.iterdir()), "a failed prepare must leave no partial output"
    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["reason"] == "DataError" and message["exit_code"] == 3 and "line 17" in message["message"]


def test_json_array_errors_name_the_line(config_factory, tmp_path):
    source = tmp_path / "d.json"
    source.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": 7, "output": "c"}\n]\n')
    with pytest.raises(DataError, match=r"d\.json: line 3: field 'instruction' is int"):
        prepare_dataset(parse_config(config_factory(source)))


def test_quality_filters_count_every_drop(config_factory, tmp_path):
    records = INSTRUCTION[:10] + [
        {"instruction": "", "output": ""},  # empty
        {"instruction": "Only a question"},  # incomplete: no output
        {"instruction": "Q", "output": "   "},  # incomplete: blank output
        {"instruction": "Tell a long story " * 40, "output": "Once upon a time " * 40},  # too long
        {"instruction": "Hi", "output": "ok"},  # too short
    ]
    config, report = prepared(config_factory, records, dataset={"min_tokens": 8, "max_tokens": 100})
    assert report["dropped"] == {"empty": 1, "incomplete": 2, "too_long": 1, "too_short": 1}
    assert report["counts"]["final"] == 10
    tokens = report["tokens"]
    assert 8 <= tokens["min"] <= tokens["p50"] <= tokens["p95"] <= tokens["max"] <= 100


def test_chat_and_preference_incomplete_records_are_dropped(config_factory, tmp_path):
    chat = CHAT[:10] + [{"messages": [{"role": "user", "content": "no reply"}]}, {"messages": []}]
    _, report = prepared(config_factory, chat)
    assert report["dropped"] == {"empty": 1, "incomplete": 1}
    prefs = PREFERENCE[:10] + [{"prompt": "p", "chosen": "same", "rejected": "same"}, {"prompt": "p", "chosen": "", "rejected": "x"}]
    _, report = prepared(config_factory, prefs, method="dpo")
    assert report["dropped"] == {"identical_preference": 1, "incomplete": 1}


def test_exact_and_near_duplicates_are_removed(config_factory):
    base = [{"instruction": f"Explain topic {i} in detail please", "output": f"Topic {i} is about the number {i} and its friends"} for i in range(10)]
    exact = [{"instruction": "  EXPLAIN topic 3 in   detail please", "output": "topic 3 is about the number 3 and its friends"}]
    near = [{"instruction": "Explain topic 5 in detail please", "output": "Topic 5 is about the number 5 and its friends. Thanks!"}]
    records = base + exact + near
    _, report = prepared(config_factory, records, dataset={"dedup": {"exact": True, "near": True, "near_threshold": 0.8}})
    assert report["dropped"] == {"exact_duplicate": 1, "near_duplicate": 1}
    _, report = prepared(config_factory, records, dataset={"dedup": {"exact": False, "near": False}})
    assert report["dropped"] == {}


PII_RECORDS = INSTRUCTION[:10] + [
    {"instruction": "Reach me at jane.doe@example.com", "output": "Noted, thanks."},
    {"instruction": "Charge card 4111 1111 1111 1111", "output": "Server 10.1.2.3 processed it."},
]


def test_pii_block_names_line_and_type_but_not_the_value(config_factory, tmp_path):
    config = parse_config(config_factory(PII_RECORDS))
    with pytest.raises(DataError) as caught:
        prepare_dataset(config)
    message = str(caught.value)
    assert "train.jsonl: line 11 (EMAIL)" in message
    assert "train.jsonl: line 12 (CREDIT_CARD, IP_ADDRESS)" in message
    assert "jane.doe" not in message and "4111" not in message and "10.1.2.3" not in message
    assert not config.prepared_path.exists()


@pytest.mark.parametrize(
    "policy, expected_output",
    [("redact", "Reach me at [EMAIL]"), ("allow", "Reach me at jane.doe@example.com")],
)
def test_pii_redact_and_allow(config_factory, policy, expected_output):
    config, report = prepared(
        config_factory, PII_RECORDS, dataset={"pii_policy": policy, "split": {"train": 0.8, "validation": 0.2, "test": 0.0}}
    )
    assert report["pii"] == {"policy": policy, "findings": {"CREDIT_CARD": 1, "EMAIL": 1, "IP_ADDRESS": 1}, "records_with_pii": 2}
    everything = [r for split in ("train", "validation", "test") for r in read_split(config, split)]
    instructions = {r["instruction"] for r in everything}
    assert expected_output in instructions
    if policy == "redact":
        assert "Charge card [CREDIT_CARD]" in instructions
        assert not any("@example.com" in json.dumps(r) for r in everything)


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({"balance_by": "category"}, {"a": 2, "b": 2, "c": 2}),
        ({"balance_by": "category", "balance_mode": "cap", "balance_cap": 3}, {"a": 3, "b": 3, "c": 2}),
    ],
    ids=["downsample", "cap"],
)
def test_balancing_by_category(config_factory, sections, expected):
    counts = {"a": 8, "b": 4, "c": 2}
    records = [
        {"instruction": f"Question {cat} {i}", "output": f"Answer {cat} {i}", "category": cat}
        for cat, n in counts.items()
        for i in range(n)
    ]
    config, report = prepared(config_factory, records, dataset={**sections, "split": {"train": 0.5, "validation": 0.5, "test": 0.0}})
    assert report["balance"]["after"] == expected and report["balance"]["before"] == counts
    again = prepare_dataset(config)
    assert again["sha256"] == report["sha256"], "balancing must be deterministic"


def test_balancing_needs_the_field(config_factory):
    records = INSTRUCTION[:5] + [{"instruction": "x y z", "output": "w v u", "category": "a"}]
    with pytest.raises(DataError, match=r"line 1: has no 'category' field"):
        prepared(config_factory, records, dataset={"balance_by": "category"})


def test_split_is_deterministic_and_seeded(config_factory, tmp_path):
    records = json_format_records(50)
    config, first = prepared(config_factory, records)
    splits = {name: read_split(config, name) for name in ("train", "validation", "test")}
    assert first["splits"] == {"train": 35, "validation": 10, "test": 5}
    _, second = prepared(config_factory, records)
    assert second["sha256"] == first["sha256"]
    assert {name: read_split(config, name) for name in splits} == splits
    all_inputs = [r["input"] for split in splits.values() for r in split]
    assert sorted(all_inputs) == sorted(r["input"] for r in records), "splits partition the data"
    _, reseeded = prepared(config_factory, records, dataset={"seed": 7})
    assert reseeded["sha256"] != first["sha256"]


def test_report_is_written_next_to_the_splits(config_factory):
    config, report = prepared(config_factory, json_format_records(30))
    on_disk = json.loads((config.prepared_path / "data_report.json").read_text())
    assert on_disk == report
    assert set(report) >= {"counts", "dropped", "pii", "tokens", "splits", "sha256", "source_sha256", "format"}
    assert report["sha256"].startswith("sha256:") and len(report["sha256"]) == 71
    assert sorted(p.name for p in config.prepared_path.iterdir()) == ["data_report.json", "test.jsonl", "train.jsonl", "validation.jsonl"]
    assert not [p for p in config.prepared_path.parent.iterdir() if p.name.startswith(".")], "no temp dirs left"


def test_nothing_left_is_a_data_error(config_factory):
    records = [{"instruction": "", "output": ""}] * 3
    with pytest.raises(DataError, match="no records left after filtering"):
        prepared(config_factory, records)


def test_max_records_takes_a_seeded_sample_before_filters(tmp_path, tiny_model):
    import json as _json

    from finetune_trainer.config import parse_config
    from finetune_trainer.prepare import prepare_dataset
    from finetune_trainer.testing import json_format_records

    data = tmp_path / "data.jsonl"
    data.write_text("".join(_json.dumps(r) + "\n" for r in json_format_records(50)))

    def run(out):
        config = parse_config({
            "model": {"uri": str(tiny_model)},
            "dataset": {"source": str(data), "max_records": 20, "dedup": {"near": False}},
            "output": {"dir": str(tmp_path / out)},
            "early_stopping": {"enabled": True},
        })
        return prepare_dataset(config)

    first, second = run("a"), run("b")
    assert first["dropped"]["max_records"] == 30
    assert sum(first["splits"].values()) <= 20
    assert first["sha256"] == second["sha256"]  # the same seed picks the same sample
