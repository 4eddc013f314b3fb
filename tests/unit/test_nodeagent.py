"""Pure parts of the dev cluster's node agent: image lookup, $(VAR) expansion, quantities."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from devcluster import nodeagent  # noqa: E402
from devcluster.nodeagent import ImageEntry, ImageMap, _expand, quantity_to_float, resource_ref  # noqa: E402

IMAGES = ImageMap(
    {
        "busybox": ImageEntry(),
        "ghcr.io/finetune-operator/trainer": ImageEntry(entrypoint=["python", "-m", "finetune_trainer"]),
        "ghcr.io/x/pinned:1.0": ImageEntry(entrypoint=["pinned"]),
    }
)


@pytest.mark.parametrize(
    "image, entrypoint",
    [
        ("busybox", []),
        ("busybox:1.36", []),
        ("ghcr.io/finetune-operator/trainer:0.1.0", ["python", "-m", "finetune_trainer"]),
        ("ghcr.io/finetune-operator/trainer@sha256:abc", ["python", "-m", "finetune_trainer"]),
        ("ghcr.io/x/pinned:1.0", ["pinned"]),
        ("localhost:5000/busybox:1", None),
        ("ghcr.io/x/pinned:2.0", None),
        ("unknown/image", None),
    ],
)
def test_image_lookup(image, entrypoint):
    entry = IMAGES.lookup(image)
    assert (entry.entrypoint if entry else None) == entrypoint


@pytest.mark.parametrize(
    "value, expected",
    [
        ("$(A)-$(B)", "1-2"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("no vars", "no vars"),
        ("$(A", "$(A"),
    ],
)
def test_kubernetes_variable_expansion(value, expected):
    assert _expand(value, {"A": "1", "B": "2"}) == expected


@pytest.mark.parametrize(
    "quantity, value",
    [("1", 1.0), ("500m", 0.5), ("1Gi", 2**30), ("512Mi", 512 * 2**20), ("2k", 2000.0)],
)
def test_quantities(quantity, value):
    assert quantity_to_float(quantity) == pytest.approx(value)


def test_resource_field_ref_with_divisor():
    container = {"resources": {"limits": {"memory": "1Gi", "cpu": "2"}}}
    assert resource_ref(container, {"resource": "limits.memory", "divisor": "1Mi"}) == "1024"
    assert resource_ref(container, {"resource": "limits.cpu"}) == "2"
    assert resource_ref(container, {"resource": "requests.cpu"}) == "0"


@pytest.mark.parametrize(
    ("limits", "threads"),
    [({}, None), ({"cpu": "2"}, 2), ({"cpu": "1500m"}, 2), ({"cpu": "100m"}, 1), ({"cpu": "0.5"}, 1),
     ({"memory": "1Gi"}, None)],
)
def test_a_cpu_limit_sets_the_thread_count(limits, threads):
    assert nodeagent.cpu_threads({"resources": {"limits": limits}}) == threads


def test_pod_addresses_skip_ones_whose_ports_are_taken():
    import socket

    agent = nodeagent.NodeAgent.__new__(nodeagent.NodeAgent)
    agent.lock, agent.next_ip = threading.Lock(), 0
    taken = socket.socket()
    taken.bind(("127.1.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        assert agent.allocate_ip([port]) == "127.1.0.2"
        assert agent.allocate_ip([port]) == "127.1.0.3"
    finally:
        taken.close()
