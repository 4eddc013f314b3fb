"""A container's filesystem view (hack/devcluster/podmounts.py), without a cluster.

The node agent starts every container through podmounts.py: a private /tmp, the dev cluster's
directory hidden, volumes at their mountPaths. The "image" (the Python environment and the
project's code) is the host's and must stay visible even where it lives under /tmp, as it does
when the cache root was made with mktemp (CI): a private /tmp once hid the interpreter itself,
and every Pod failed with exit code 127.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PODMOUNTS = Path(__file__).resolve().parents[2] / "hack" / "devcluster" / "podmounts.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root, as the dev cluster's node agent has")


def run_in_pod_view(tmp_path: Path, argv: list[str], *, image: list[str], mounts: list[dict], hide: list[str] = ()) -> subprocess.CompletedProcess:
    private_tmp = tmp_path / "private-tmp"
    overlays = tmp_path / "overlays"
    private_tmp.mkdir(mode=0o1777)
    overlays.mkdir()
    spec = tmp_path / "view.json"
    spec.write_text(json.dumps({
        "argv": argv, "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, "workdir": "/",
        "tmp": str(private_tmp), "overlays": str(overlays), "hide": list(hide), "image": image, "mounts": mounts,
    }))
    return subprocess.run([sys.executable, "-S", str(PODMOUNTS), str(spec)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def image_under_tmp():
    """An "image" under the host's /tmp: a directory with an executable in it."""
    with tempfile.TemporaryDirectory(prefix="podmounts-image-", dir="/tmp") as root:
        tool = Path(root) / "bin" / "tool"
        tool.parent.mkdir()
        tool.write_text("#!/bin/sh\necho image-runs\n")
        tool.chmod(0o755)
        yield Path(root)


def test_an_image_under_tmp_stays_visible_behind_the_private_tmp(tmp_path, image_under_tmp):
    other = tempfile.NamedTemporaryFile(prefix="podmounts-host-only-", dir="/tmp")
    script = f"{image_under_tmp}/bin/tool && ls /tmp && test ! -e {other.name} && echo host-tmp-hidden"
    done = run_in_pod_view(tmp_path, ["/bin/sh", "-c", script], image=[str(image_under_tmp)], mounts=[])
    other.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "image-runs" in done.stdout
    assert "host-tmp-hidden" in done.stdout, "the Pod saw the host's /tmp"


def test_an_image_under_tmp_stays_visible_behind_a_volume_mounted_at_tmp(tmp_path, image_under_tmp):
    # Restricted Pods mount an emptyDir at /tmp: the image must not vanish behind it either.
    volume = tmp_path / "emptydir"
    volume.mkdir()
    (volume / "from-the-volume").write_text("x")
    script = f"{image_under_tmp}/bin/tool && test -e /tmp/from-the-volume && echo volume-at-tmp"
    done = run_in_pod_view(tmp_path, ["/bin/sh", "-c", script], image=[str(image_under_tmp)],
                           mounts=[{"source": str(volume), "target": "/tmp", "readOnly": False}])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "image-runs" in done.stdout and "volume-at-tmp" in done.stdout


def test_without_the_image_listed_the_private_tmp_hides_it(tmp_path, image_under_tmp):
    # The check above can fail: the same Pod without the image list cannot find the tool.
    done = run_in_pod_view(tmp_path, [f"{image_under_tmp}/bin/tool"], image=[], mounts=[])
    assert done.returncode != 0
    assert "No such file or directory" in done.stderr + done.stdout


def test_a_volume_inside_a_hidden_directory_of_the_image_is_written_where_the_manifest_says(tmp_path, image_under_tmp):
    # The demo from a checkout under /tmp: the dev cluster's directory lies inside the image (the
    # checkout) and is hidden, and the run's output is a node path under it, mounted at the same
    # path. Binding the image back once covered that volume, and the trainer wrote into the 1 MiB
    # tmpfs that hides the directory: "No space left on device" when it saved a checkpoint.
    cluster_dir = image_under_tmp / ".devcluster"
    output = cluster_dir / "artifacts" / "run-1"
    output.mkdir(parents=True)
    script = (f"{image_under_tmp}/bin/tool && head -c 3000000 /dev/zero > {output}/adapter.safetensors "
              f"&& echo written")
    done = run_in_pod_view(tmp_path, ["/bin/sh", "-c", script], image=[str(image_under_tmp)],
                           mounts=[{"source": str(output), "target": str(output), "readOnly": False}],
                           hide=[str(cluster_dir)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "written" in done.stdout
    assert (output / "adapter.safetensors").stat().st_size == 3000000, "the file is on the host, in the volume"


def test_a_late_file_mount_is_not_covered_by_the_overlay_a_volume_under_etc_needs(tmp_path):
    # The Pod's /etc/resolv.conf (cluster DNS) and a ConfigMap at /etc/<new directory>: that
    # volume's mountpoint is made in an overlay of /etc, which once hid the Pod's resolv.conf
    # behind the host's own (every lookup went to the host's nameserver).
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.99\n")
    volume = tmp_path / "config"
    volume.mkdir()
    (volume / "endpoint").write_text("http://example.svc\n")
    target = f"/etc/podmounts-test-{os.getpid()}"
    done = run_in_pod_view(tmp_path, ["/bin/sh", "-c", f"cat /etc/resolv.conf {target}/endpoint"], image=[],
                           mounts=[{"source": str(resolv), "target": "/etc/resolv.conf", "readOnly": True, "late": True},
                                   {"source": str(volume), "target": target, "readOnly": True}])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["nameserver 127.0.0.99", "http://example.svc"]
    assert not os.path.exists(target), "the volume's mountpoint was made on the host"
    assert "127.0.0.99" not in Path("/etc/resolv.conf").read_text()
