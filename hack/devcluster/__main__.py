"""`python -m devcluster up|down|status|env` — the dev cluster for humans and `make`.

`up` builds (or reuses) the binaries, starts the cluster in the cluster
directory (default `.devcluster/` at the repository root) and prints how to
use it; `down` stops it; `status` says what runs; `env` prints an export line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import controlplane

DEFAULT_DIR = controlplane.REPO_ROOT / ".devcluster"
DEFAULT_IMAGES = Path(__file__).with_name("images.yaml")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster")
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("DEVCLUSTER_DIR", DEFAULT_DIR)))
    parser.add_argument("--nodes", type=Path, help="YAML list of nodes (default: two nodes with 8 GPUs each)")
    parser.add_argument("--image-map", type=Path, default=DEFAULT_IMAGES)
    args = parser.parse_args(argv)
    directory = args.dir.resolve()
    if args.command == "up":
        try:
            state = controlplane.start(directory, nodes_config=args.nodes, image_map=args.image_map)
        except controlplane.ClusterError as e:
            print(f"devcluster: {e}", file=sys.stderr)
            return 1
        print(f"dev cluster up: API server {state.server}")
        print(f"  export KUBECONFIG={state.kubeconfig}")
        print(f"  kubectl get nodes     (binaries in {state.bin_dir})")
        return 0
    if args.command == "down":
        controlplane.stop(directory)
        print("dev cluster stopped")
        return 0
    if args.command == "env":
        print(f"export KUBECONFIG={directory / 'kubeconfig'}")
        return 0
    if not (directory / "cluster.json").exists():
        print("no dev cluster here")
        return 1
    state = controlplane.ClusterState.load(directory)
    for name, pid in state.pids.items():
        print(f"{name:26} pid {pid:<8} {'running' if controlplane._alive(pid) else 'stopped'}")
    return 0 if state.pids else 1


if __name__ == "__main__":
    sys.exit(main())
