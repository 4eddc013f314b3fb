"""Several data sources mixed into one dataset (dataset.sources).

Each source is read (a file or directory, a teacher model, or the train split an earlier run
prepared: replay), validated in the dataset's one format, labelled with its task, and sampled:

- `records: N` takes N of its records (all of them when it has fewer);
- `weight: w` makes it w / (sum of weights) of the weighted part of the mix, which is as large as
  the weighted sources allow at those shares (the scarcest source, relative to its share, is taken
  whole: 3,500 real records at weight 0.8 and a replay at weight 0.2 give 3,500 + 875);
- neither: every record.

Samples are seeded by the dataset seed and the source's name, and keep the source's order, so the
same inputs always give the same mix. The mixed records then go through the usual filters, PII
policy, dedup (across sources, earlier sources win) and split; every record's location starts
with its source's name ("real: /data/t.jsonl: line 7"), which is how the data report counts each
source's contribution after every stage.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import formats, synthetic
from .config import DataSourceSpec, TrainerConfig
from .exitcodes import DataError

REPLAY_SPLIT = "train.jsonl"  # what a replay source reads from an earlier run's prepared data


@dataclass
class SourceRecords:
    spec: DataSourceSpec
    records: list[tuple[str, dict]]  # (location, record), validated
    synthetic_report: dict[str, Any] | None = None


@dataclass
class Mixed:
    format: str
    records: list[tuple[str, dict]]
    sources: list[dict[str, Any]] = field(default_factory=list)  # per-source report entries
    synthetic: dict[str, Any] | None = None  # the teachers' reports, by source name


def source_of(location: str) -> str:
    """The source name a mixed record's location starts with."""
    return location.split(": ", 1)[0]


def _sub_config(config: TrainerConfig, **dataset: Any) -> TrainerConfig:
    fields = {"sources": None, "source": None, "synthetic": None, **dataset}
    return config.model_copy(update={"dataset": config.dataset.model_copy(update=fields)})


def _seeded(config: TrainerConfig, name: str) -> random.Random:
    return random.Random(f"{config.data_seed}:{name}")


def _read(config: TrainerConfig, spec: DataSourceSpec, fmt: str | None, read: dict[str, SourceRecords]) -> SourceRecords:
    from .prepare import load_records

    if spec.synthetic is not None:
        teacher = spec.synthetic
        if spec.seed_from is not None:
            pool = [record for _, record in read[spec.seed_from].records]
            drawn = sorted(_seeded(config, spec.name + ":seeds").sample(range(len(pool)), min(spec.seed_count, len(pool))))
            teacher = teacher.model_copy(update={"seed_examples": [*teacher.seed_examples, *(pool[i] for i in drawn)]})
        sub = _sub_config(config, synthetic=teacher, format=fmt or config.dataset.format)
        generated = synthetic.generate(sub)
        records = [(f"{spec.name}: {location}", record) for location, record in generated.records]
        return SourceRecords(spec, records, generated.report)
    uri = spec.source if spec.source is not None else str(spec.replay).rstrip("/") + "/" + REPLAY_SPLIT
    # Each file source detects its own format (unless the dataset names one), so a source in
    # another format is refused by name below rather than record by record.
    sub = _sub_config(config, source=uri)
    _, records = load_records(sub)
    return SourceRecords(spec, [(f"{spec.name}: {location}", record) for location, record in records])


def _check_format(source: SourceRecords, fmt: str | None) -> str:
    found = formats.detect_format(source.records[0][1]) if source.records else None
    if found is None:
        raise DataError(f"dataset.sources {source.spec.name} ({source.spec.origin}): contains no records")
    if fmt is not None and found != fmt:
        raise DataError(
            f"dataset.sources {source.spec.name} ({source.spec.origin}): holds {found} records but the sources "
            f"before it hold {fmt} records; every source of one dataset must have the same format"
        )
    return found


def _labelled(records: list[tuple[str, dict]], task: str | None) -> list[tuple[str, dict]]:
    if task is None:
        return records
    return [(location, {**record, "task": task}) for location, record in records]


def plan_counts(available: dict[str, int], specs: list[DataSourceSpec]) -> dict[str, int]:
    """How many records the mix takes from each source (see the module docstring)."""
    counts = {s.name: min(s.records, available[s.name]) if s.records is not None else available[s.name] for s in specs}
    weighted = [s for s in specs if s.weight is not None]
    if weighted:
        total_weight = sum(float(s.weight or 0) for s in weighted)
        size = min(available[s.name] * total_weight / float(s.weight or 1) for s in weighted)
        for s in weighted:
            counts[s.name] = min(available[s.name], math.floor(size * float(s.weight or 0) / total_weight + 1e-9))
    return counts


def mix(config: TrainerConfig) -> Mixed:
    """Read, label and sample every source of config.dataset.sources, in order."""
    specs = config.dataset.sources or []
    fmt = None if config.dataset.format == "auto" else config.dataset.format
    read: dict[str, SourceRecords] = {}
    for spec in specs:
        source = _read(config, spec, fmt, read)
        fmt = _check_format(source, fmt)
        read[spec.name] = source
    assert fmt is not None
    counts = plan_counts({name: len(s.records) for name, s in read.items()}, specs)
    records: list[tuple[str, dict]] = []
    entries: list[dict[str, Any]] = []
    for spec in specs:
        pool = read[spec.name].records
        wanted = counts[spec.name]
        chosen = pool if wanted >= len(pool) else [pool[i] for i in sorted(_seeded(config, spec.name).sample(range(len(pool)), wanted))]
        records += _labelled(chosen, spec.task)
        entry: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "origin": spec.origin, "available": len(pool), "mixed": len(chosen)}
        if spec.task is not None:
            entry["task"] = spec.task
        if spec.records is not None:
            entry["requested_records"] = spec.records
        if spec.weight is not None:
            entry["weight"] = spec.weight
        if spec.replay_of is not None:
            entry["replay_of"] = spec.replay_of
        entries.append(entry)
    teachers = {name: s.synthetic_report for name, s in read.items() if s.synthetic_report is not None}
    return Mixed(fmt, records, entries, teachers or None)


def count_by_source(records: list[tuple[str, Any]]) -> Counter[str]:
    return Counter(source_of(location) for location, _ in records)
