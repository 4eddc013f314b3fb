"""Enter a Pod's own filesystem view, then exec the container's process.

The node agent starts every container as `python podmounts.py SPEC.json`: this
program (standard library only, so it starts fast) moves into a new mount
namespace, bind-mounts each volume at its real `mountPath`, gives the Pod a
private `/tmp`, hides the dev cluster's own directory (other Pods' volumes, the
CA key), binds the "image" (the project's Python environment and code) back where
a private `/tmp` or a hidden directory covered it, and then execs the container's
command.  The process sees exactly the
paths its manifest names, as in a container; the host network and the rest of
the host filesystem (the "image": the project's Python and code) stay shared.

A mountPath that does not exist is made the way a container runtime makes it in
the image: inside a volume this Pod mounted already, by creating it there; under
an existing host directory, in a per-Pod overlay of that directory (so the host
never sees it); and only where neither works (directly under `/`, or under a
directory with other mounts below it, such as `/dev`), as an empty directory or
file on the host, a mountpoint and nothing more.

SPEC.json: {"argv": [...], "env": {...}, "workdir": "/", "tmp": DIR, "overlays": DIR,
"hide": [DIR, ...], "image": [PATH, ...], "mounts": [{"source": PATH, "target": PATH, "readOnly": bool,
"late": bool}, ...]}; a "late" mount (a file the runtime manages, /etc/resolv.conf) is bound after
everything else, so no overlay made for a volume's mountpoint covers it.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source or fstype} on {target}")


def _host_mountpoints() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class PodView:
    def __init__(self, spec: dict):
        self.spec = spec
        self.ours: list[str] = []  # mount targets this Pod made, where mountpoints are made freely
        self.host_mounts = _host_mountpoints()
        self.overlay_fd = -1  # opened inside the new namespace: a mount of the old one cannot be cloned
        self.overlays = 0

    def _make(self, target: str, is_dir: bool) -> None:
        if is_dir:
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()

    def mountpoint(self, target: str, is_dir: bool) -> None:
        if os.path.lexists(target):
            return
        ancestor = os.path.dirname(target)
        while not os.path.isdir(ancestor):
            ancestor = os.path.dirname(ancestor)
        if any(_under(ancestor, mine) for mine in self.ours):
            self._make(target, is_dir)
            return
        has_mounts_below = any(m != ancestor and _under(m, ancestor) for m in self.host_mounts)
        if ancestor != "/" and not has_mounts_below:
            self.overlays += 1
            layer = f"/proc/self/fd/{self.overlay_fd}/{self.overlays}"
            os.makedirs(f"{layer}/upper", exist_ok=True)
            os.makedirs(f"{layer}/work", exist_ok=True)
            _mount("overlay", ancestor, "overlay", 0,
                   f"lowerdir={ancestor},upperdir={layer}/upper,workdir={layer}/work")
            self.ours.append(ancestor)
        self._make(target, is_dir)

    def enter(self) -> None:
        spec = self.spec
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        self.overlay_fd = os.open(spec["overlays"], os.O_PATH)
        # Every source is opened before anything is mounted: a private /tmp or the hidden
        # cluster directory may cover the path a source lives at, never the open descriptor.
        mounts = sorted((m for m in spec["mounts"] if not m.get("late")), key=lambda m: os.path.normpath(m["target"]).count("/"))
        sources = [os.open(m["source"], os.O_PATH) for m in mounts]
        late = [(m, os.open(m["source"], os.O_PATH)) for m in spec["mounts"] if m.get("late")]
        tmp = os.open(spec["tmp"], os.O_PATH)
        image = [(os.path.normpath(p), os.open(p, os.O_PATH)) for p in spec.get("image") or [] if os.path.exists(p)]
        for hidden in spec.get("hide") or []:
            if os.path.isdir(hidden):
                _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
                self.ours.append(hidden)
        if not any(os.path.normpath(m["target"]) == "/tmp" for m in mounts):
            _mount(f"/proc/self/fd/{tmp}", "/tmp", None, MS_BIND | MS_REC)
            self.ours.append("/tmp")
        for mount, fd in zip(mounts, sources):
            target = os.path.normpath(mount["target"])
            self.mountpoint(target, os.path.isdir(f"/proc/self/fd/{fd}"))
            _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
            if mount.get("readOnly"):
                _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
            self.ours.append(target)
        # The image is the host's: where the cache root or the checkout lives under /tmp (a CI
        # runner's mktemp, say), the private /tmp -- or a volume mounted at /tmp -- would hide
        # the interpreter the Pod runs.  Bound last, so that nothing the Pod mounts covers it.
        rebound = []
        for path, fd in image:
            if any(_under(path, mine) for mine in self.ours):
                self.mountpoint(path, os.path.isdir(f"/proc/self/fd/{fd}"))
                _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
                rebound.append(path)
        # A volume whose mountPath lies inside an image path just bound was covered by that bind
        # (a node path under the dev cluster's directory in a checkout under /tmp: the demo's
        # artifacts); it is mounted again on top, so the Pod writes where its manifest says.
        for mount, fd in zip(mounts, sources):
            target = os.path.normpath(mount["target"])
            if any(target != path and _under(target, path) for path in rebound):
                self.mountpoint(target, os.path.isdir(f"/proc/self/fd/{fd}"))
                _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
                if mount.get("readOnly"):
                    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        # Files the runtime manages (/etc/resolv.conf) go last: a volume's mountpoint made in an
        # overlay of /etc would otherwise cover them with the host's own file.
        for mount, fd in late:
            target = os.path.normpath(mount["target"])
            self.mountpoint(target, os.path.isdir(f"/proc/self/fd/{fd}"))
            _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
            if mount.get("readOnly"):
                _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        for fd in (*sources, *(fd for _, fd in image), *(fd for _, fd in late), tmp, self.overlay_fd):
            os.close(fd)


def main(argv: list[str]) -> None:
    with open(argv[0]) as f:
        spec = json.load(f)
    os.unlink(argv[0])  # it may hold Secret values
    try:
        PodView(spec).enter()
    except OSError as e:
        print(f"devcluster: cannot set up the Pod's mounts: {e}", file=sys.stderr)
        sys.exit(128)
    workdir = spec.get("workdir") or "/"
    os.chdir(workdir if os.path.isdir(workdir) else "/")
    command = spec["argv"]
    try:
        os.execvpe(command[0], command, spec["env"])
    except OSError as e:
        print(f"devcluster: {command[0]}: {e.strerror}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
