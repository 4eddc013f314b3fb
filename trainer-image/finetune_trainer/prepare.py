"""Data preparation: from a raw dataset to validated, cleaned, split JSONL and a data report.

    python -m finetune_trainer.prepare --config config.yaml

Stages, in order (each counted in the report): read and validate every record (a malformed one
stops the run with its file:line), or have a teacher model write them (`dataset.synthetic`, see
synthetic.py; what it was asked, wrote and had rejected is in the report) -> drop
empty/incomplete records -> PII policy (block fails naming file:line and type, redact replaces,
allow keeps) -> token-length limits (base model tokenizer) -> exact then near-duplicate removal
-> optional category balancing -> a seeded train/validation/test split. Output goes to
`dataset.prepared_dir` (default <output.dir>/data): train.jsonl, validation.jsonl, test.jsonl
and data_report.json, written in a temporary directory and renamed into place, so a failed run
leaves no partial output.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from . import dedup, formats, mixing, pii, synthetic
from .artifacts import atomic_directory, digest_files, write_json
from .cli import emit, run
from .config import TrainerConfig
from .exitcodes import DataError
from .models import TokenCounter, hub_lineage, resolve_model
from .sources import read_source

SPLITS = ("train", "validation", "test")
REPORT_FILE = "data_report.json"
_MAX_LISTED = 5  # locations named in a PII block error; the count covers the rest


def load_records(config: TrainerConfig) -> tuple[str, list[tuple[str, dict]]]:
    """(format, [(location, record)]) with every record's shape validated."""
    fmt = None if config.dataset.format == "auto" else config.dataset.format
    records: list[tuple[str, dict]] = []
    for raw in read_source(config):
        if fmt is None:
            fmt = formats.detect_format(raw.value)
            if fmt is None:
                shape = (
                    "has keys " + ", ".join(sorted(map(str, raw.value)))
                    if isinstance(raw.value, dict)
                    else f"is {type(raw.value).__name__}, not a JSON object"
                )
                raise DataError(
                    f"dataset {raw.location}: {shape}; cannot detect the format (expected "
                    "instruction/output, messages, or prompt/chosen/rejected); fix the record or "
                    "set dataset.format"
                )
        records.append((raw.location, formats.validate(raw.location, raw.value, fmt)))
    if fmt is None or not records:
        raise DataError(f"dataset {config.dataset.origin}: contains no records")
    check_method(config, fmt)
    return fmt, records


def check_method(config: TrainerConfig, fmt: str) -> None:
    """The method and the record format agree (dpo trains on preference pairs, sft on the rest)."""
    if config.method == "dpo" and fmt != "preference":
        raise DataError(f"dataset {config.dataset.origin}: is {fmt} data but method dpo needs prompt/chosen/rejected records")
    if config.method == "sft" and fmt == "preference":
        raise DataError(f"dataset {config.dataset.origin}: is preference data; use method dpo for prompt/chosen/rejected records")


def _source_digest(records: list[tuple[str, dict]]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for _, record in records:
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


def apply_pii_policy(config: TrainerConfig, fmt: str, records: list[tuple[str, dict]]) -> tuple[list[tuple[str, dict]], dict[str, Any]]:
    policy = config.dataset.pii_policy
    types = frozenset(config.dataset.pii_types)
    found_by_type: Counter[str] = Counter()
    affected: list[tuple[str, list[str]]] = []
    out: list[tuple[str, dict]] = []
    for location, record in records:
        record_types: list[str] = []

        def scrub(text: str) -> str:
            findings = pii.find_pii(text, types)
            record_types.extend(f.type for f in findings)
            return pii.redact(text, findings) if policy == "redact" else text

        cleaned = formats.map_text(record, fmt, scrub)
        if record_types:
            found_by_type.update(record_types)
            affected.append((location, sorted(set(record_types))))
        out.append((location, cleaned if policy == "redact" else record))
    if policy == "block" and affected:
        listed = "; ".join(f"{loc} ({', '.join(kinds)})" for loc, kinds in affected[:_MAX_LISTED])
        more = f" and {len(affected) - _MAX_LISTED} more records" if len(affected) > _MAX_LISTED else ""
        raise DataError(
            f"dataset {config.dataset.origin}: PII found and dataset.pii_policy is block: {listed}{more}; "
            "remove it from the source, or set dataset.pii_policy to redact"
        )
    report = {
        "policy": policy,
        "findings": dict(sorted(found_by_type.items())),
        "records_with_pii": len(affected),
    }
    return out, report


def balance(config: TrainerConfig, records: list[tuple[str, dict]]) -> tuple[list[tuple[str, dict]], dict[str, Any] | None]:
    field = config.dataset.balance_by
    if field is None:
        return records, None
    groups: dict[str, list[int]] = defaultdict(list)
    for index, (location, record) in enumerate(records):
        if field not in record or record[field] is None:
            raise DataError(
                f"dataset {location}: has no {field!r} field to balance on; add it to every "
                "record or change dataset.balance_by"
            )
        groups[str(record[field])].append(index)
    target = min(len(g) for g in groups.values()) if config.dataset.balance_mode == "downsample" else config.dataset.balance_cap
    rng = random.Random(config.data_seed)
    keep: set[int] = set()
    for category in sorted(groups):
        members = groups[category]
        keep.update(members if len(members) <= target else rng.sample(members, target))
    kept = [r for i, r in enumerate(records) if i in keep]
    after = Counter(str(r[field]) for _, r in kept)
    return kept, {
        "by": field,
        "mode": config.dataset.balance_mode,
        "before": {k: len(v) for k, v in sorted(groups.items())},
        "after": dict(sorted(after.items())),
    }


def split_records(config: TrainerConfig, records: list[Any]) -> dict[str, list[Any]]:
    """Seeded shuffle, then cut by the fractions; the same seed always gives the same split.
    Records of several tasks are split task by task, so every task is in every split (its
    per-task figures and gates are measured on its own held-out records)."""
    tasks = [_task_of(r) for r in records]
    if len(set(tasks)) < 2:
        return {name: [records[i] for i in chosen] for name, chosen in _cut(config, len(records), config.data_seed).items()}
    picked: dict[str, list[int]] = {name: [] for name in SPLITS}
    for task in sorted(set(tasks)):
        members = [i for i, t in enumerate(tasks) if t == task]
        for name, chosen in _cut(config, len(members), f"{config.data_seed}:{task}", what=f"task {task!r}").items():
            picked[name] += [members[i] for i in chosen]
    return {name: [records[i] for i in sorted(chosen)] for name, chosen in picked.items()}


def _task_of(item: Any) -> str | None:
    record = item[1] if isinstance(item, tuple) else item
    task = record.get("task") if isinstance(record, dict) else None
    return None if task is None else str(task)


def _cut(config: TrainerConfig, total: int, seed: Any, what: str = "") -> dict[str, list[int]]:
    """Positions 0..total-1 of each split: a seeded shuffle cut by the fractions."""
    fractions = config.dataset.split
    sizes = {"validation": round(total * fractions.validation), "test": round(total * fractions.test)}
    for name in ("validation", "test"):
        # A non-zero fraction of a small dataset still gets one record, while training keeps one.
        if getattr(fractions, name) > 0 and sizes[name] == 0 and total - sum(sizes.values()) > 1:
            sizes[name] = 1
    sizes["train"] = total - sizes["validation"] - sizes["test"]
    if sizes["train"] < 1:
        raise DataError(
            f"dataset {config.dataset.origin}: only {total} records{' of ' + what if what else ''} left after "
            "filtering, too few to split; add data or relax the filters"
        )
    order = list(range(total))
    random.Random(seed).shuffle(order)
    out: dict[str, list[int]] = {}
    start = 0
    for name in SPLITS:
        out[name] = sorted(order[start : start + sizes[name]])  # keep source order inside a split
        start += sizes[name]
    return out


def task_shares(counts: dict[str, int], mode: str, temperature: float) -> dict[str, float]:
    """Each task's share of the sampled train split: n_i^(1/T) normalised (T=1 proportional,
    T=inf equal)."""
    exponent = 0.0 if mode == "equal" else (1.0 if mode == "proportional" else 1.0 / temperature)
    weights = {task: n ** exponent for task, n in counts.items()}
    total = sum(weights.values())
    return {task: w / total for task, w in weights.items()}


def sample_tasks(config: TrainerConfig, rows: list[tuple[str, dict]]) -> tuple[list[tuple[str, dict]], dict[str, Any] | None]:
    """The train split sampled per task (dataset.task_sampling), and what was done; records
    without a `task` field count as one task, ""."""
    tasks = Counter(str(record.get("task", "")) for _, record in rows)
    if len(tasks) < 2:
        return rows, None
    mode, temperature = config.dataset.task_sampling, config.dataset.task_temperature
    shares = task_shares(dict(tasks), mode, temperature)
    size = min(tasks[t] / shares[t] for t in tasks)  # the largest split at these shares, no repeats
    wanted = {t: min(tasks[t], max(1, int(size * shares[t] + 1e-9))) for t in tasks}
    rng = random.Random(f"{config.data_seed}:task-sampling")
    keep: set[int] = set()
    for task in sorted(tasks):
        members = [i for i, (_, record) in enumerate(rows) if str(record.get("task", "")) == task]
        keep.update(members if wanted[task] >= len(members) else rng.sample(members, wanted[task]))
    kept = [row for i, row in enumerate(rows) if i in keep]
    return kept, {
        "mode": mode,
        **({"temperature": temperature} if mode == "temperature" else {}),
        "before": dict(sorted(tasks.items())),
        "after": dict(sorted(Counter(str(r.get("task", "")) for _, r in kept).items())),
    }


def count_parameters(model_dir: Path) -> int | None:
    """The base model's parameter count, from its config on the meta device (no weights are read);
    None when the config cannot be instantiated."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        model_config = AutoConfig.from_pretrained(str(model_dir))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config)
        return int(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 - an estimate only; the training reports the real figures
        return None


def _token_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    ordered = sorted(lengths)

    def percentile(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]

    return {
        "min": ordered[0],
        "mean": round(statistics.fmean(ordered), 2),
        "p50": percentile(0.5),
        "p95": percentile(0.95),
        "max": ordered[-1],
        "total": sum(ordered),
    }


def prepare_dataset(config: TrainerConfig) -> dict[str, Any]:
    """Run every stage and write the prepared splits; returns the data report."""
    counts: dict[str, int] = {}
    dropped: Counter[str] = Counter()

    synthetic_report: dict[str, Any] | None = None
    mixed: mixing.Mixed | None = None
    # Each source's records after every stage (a mixed dataset only): source -> stage -> count.
    by_source: dict[str, dict[str, int]] = {}

    def track(stage: str, current: list[tuple[str, Any]]) -> None:
        if mixed is not None:
            tally = mixing.count_by_source(current)
            for entry in mixed.sources:
                by_source.setdefault(entry["name"], {})[stage] = tally.get(entry["name"], 0)

    if config.dataset.sources is not None:
        mixed = mixing.mix(config)
        fmt, records, synthetic_report = mixed.format, mixed.records, mixed.synthetic
        check_method(config, fmt)
    elif config.dataset.synthetic is not None:
        generated = synthetic.generate(config)
        fmt, records, synthetic_report = generated.format, generated.records, generated.report
    else:
        fmt, records = load_records(config)
    counts["read"] = len(records)
    track("mixed", records)
    source_digest = _source_digest(records)
    if config.dataset.max_records is not None and len(records) > config.dataset.max_records:
        # A seeded sample, kept in file order so errors and reports still read top to bottom.
        keep = sorted(random.Random(config.data_seed).sample(range(len(records)), config.dataset.max_records))
        dropped["max_records"] += len(records) - len(keep)
        records = [records[i] for i in keep]

    kept = []
    for location, record in records:
        reason = formats.incomplete_reason(record, fmt)
        if reason:
            dropped[reason] += 1
        else:
            kept.append((location, record))
    records = kept
    counts["after_quality"] = len(records)
    track("after_quality", records)

    records, pii_report = apply_pii_policy(config, fmt, records)

    model_dir = resolve_model(config)
    counter = TokenCounter(model_dir)
    lengths = counter.count([formats.joined_text(r, fmt) for _, r in records])
    kept, kept_lengths = [], []
    max_tokens = config.dataset.max_tokens
    for item, length in zip(records, lengths):
        if length < config.dataset.min_tokens:
            dropped["too_short"] += 1
        elif max_tokens is not None and length > max_tokens:
            dropped["too_long"] += 1
        else:
            kept.append(item)
            kept_lengths.append(length)
    records, lengths = kept, kept_lengths
    counts["after_length"] = len(records)
    track("after_length", records)

    texts = [formats.joined_text(r, fmt) for _, r in records]
    keep = [True] * len(records)
    if config.dataset.dedup.exact:
        seen: set[str] = set()
        for i, text in enumerate(texts):
            key = dedup.exact_key(text)
            if key in seen:
                keep[i] = False
                dropped["exact_duplicate"] += 1
            seen.add(key)
    if config.dataset.dedup.near:
        survivors = [i for i in range(len(records)) if keep[i]]
        near = dedup.near_duplicates(
            [texts[i] for i in survivors], config.dataset.dedup.near_threshold, config.dataset.dedup.shingle_size
        )
        for position in near:
            keep[survivors[position]] = False
            dropped["near_duplicate"] += 1
    records = [r for r, k in zip(records, keep) if k]
    lengths = [n for n, k in zip(lengths, keep) if k]
    counts["after_dedup"] = len(records)
    track("after_dedup", records)

    length_of = {location: n for (location, _), n in zip(records, lengths)}
    before_balance = len(records)
    records, balance_report = balance(config, records)
    dropped["balance"] += before_balance - len(records)
    lengths = [length_of[location] for location, _ in records]
    counts["final"] = len(records)
    track("final", records)
    if not records:
        raise DataError(
            f"dataset {config.dataset.origin}: no records left after filtering (dropped: "
            f"{', '.join(f'{k} {v}' for k, v in sorted(dropped.items()) if v) or 'none'}); fix the data or relax the filters"
        )

    located = split_records(config, records)
    located["train"], sampling_report = sample_tasks(config, located["train"])
    splits = {name: [record for _, record in rows] for name, rows in located.items()}
    report: dict[str, Any] = {
        "source": config.dataset.origin,
        "format": fmt,
        "seed": config.data_seed,
        "counts": counts,
        "dropped": {k: v for k, v in sorted(dropped.items()) if v},
        "pii": pii_report,
        "tokens": _token_stats(lengths),
        # What an estimate of the training's compute needs before it starts (the operator's budget).
        "train_tokens": sum(length_of[location] for location, _ in located["train"]),
        **({"model_parameters": parameters} if (parameters := count_parameters(model_dir)) else {}),
        "splits": {name: len(rows) for name, rows in splits.items()},
        "source_sha256": source_digest,
        "files": {name: f"{name}.jsonl" for name in SPLITS},
    }
    if balance_report:
        report["balance"] = balance_report
    if sampling_report:
        report["task_sampling"] = sampling_report
    if hub_lineage(config.model):
        report["base_model_hub"] = hub_lineage(config.model)  # train tells the operator (lineage)
    if synthetic_report:
        report["synthetic"] = synthetic_report
    if mixed is not None:
        for entry in mixed.sources:
            entry["stages"] = by_source[entry["name"]]
            entry["splits"] = {name: mixing.count_by_source(rows).get(entry["name"], 0) for name, rows in located.items()}
        report["sources"] = mixed.sources

    with atomic_directory(config.prepared_path) as staging:
        for name, rows in splits.items():
            with (staging / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        report["sha256"] = digest_files(staging, [staging / f"{n}.jsonl" for n in SPLITS])
        write_json(staging / REPORT_FILE, report)
    return report


def report_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The part of the data report that goes into status and termination messages."""
    summary = {
        "format": report["format"],
        "counts": report["counts"],
        "dropped": report["dropped"],
        "pii": report["pii"]["findings"],
        "splits": report["splits"],
        "tokens": {k: report["tokens"].get(k) for k in ("mean", "p95", "max")},
        "train_tokens": report.get("train_tokens"),
        "model_parameters": report.get("model_parameters"),
        "sha256": report["sha256"],
    }
    if "synthetic" in report:
        teachers = [report["synthetic"]] if "sources" not in report else list(report["synthetic"].values())
        summary["synthetic"] = {
            k: sum(int(t.get(k, 0)) for t in teachers) for k in ("requested", "generated", "rejected_total", "requests", "retries")
        }
    if "task_sampling" in report:
        summary["tasks"] = report["task_sampling"]["after"]
    if "sources" in report:
        summary["sources"] = [
            {"name": s["name"], "kind": s["kind"], "read": s["available"], "mixed": s["mixed"], "final": s["stages"]["final"],
             **({"task": s["task"]} if "task" in s else {}), "splits": s["splits"]}
            for s in report["sources"]
        ]
    return summary


def read_report(prepared: Path) -> dict[str, Any] | None:
    path = Path(prepared) / REPORT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def main_body(config: TrainerConfig) -> dict[str, Any]:
    """Validate, clean and split the dataset of a trainer config."""
    report = prepare_dataset(config)
    summary = report_summary(report)
    emit({"event": "prepared", "prepared_dir": str(config.prepared_path), **summary})
    return {"status": "Prepared", "stage": "prepare", "dataset": summary, "prepared_dir": str(config.prepared_path)}


def main(argv: list[str] | None = None) -> int:
    return run("prepare", main_body, argv)


if __name__ == "__main__":
    sys.exit(main())
