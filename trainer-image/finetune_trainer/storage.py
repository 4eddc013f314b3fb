"""Object storage (s3://) access with per-location credentials, and uploads that hash what they send.

A run may read its dataset and base model from one bucket and write its output to another, each
with credentials of its own: the operator gives a Pod, for every s3:// location it uses whose
spec names a `credentialsSecretRef`, the environment variables

    FINETUNE_<ROLE>_AWS_ACCESS_KEY_ID, FINETUNE_<ROLE>_AWS_SECRET_ACCESS_KEY,
    FINETUNE_<ROLE>_AWS_SESSION_TOKEN (optional)        ROLE: DATASET, BASE_MODEL, OUTPUT

as secretKeyRefs, and AWS_ENDPOINT_URL_S3 when the operator has an S3-compatible endpoint.
A location without them uses the AWS SDK's default chain (the ServiceAccount's workload
identity, AWS_* variables, instance metadata). Credentials are handed to s3fs directly and never
printed: error messages name the location and the variable names, never their values.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

ROLES = ("dataset", "base_model", "output")
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
ENDPOINT_ENV = "AWS_ENDPOINT_URL_S3"


def credential_env(role: str, key: str) -> str:
    """The variable that carries `key` (AWS_ACCESS_KEY_ID, ...) for the location of `role`."""
    if role not in ROLES or key not in CREDENTIAL_KEYS:
        raise ValueError(f"unknown role {role!r} or key {key!r}")
    return f"FINETUNE_{role.upper()}_{key}"


def storage_options(role: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """s3fs options for the location of `role`: its own credentials when the Pod has them, and
    the endpoint; empty (the SDK's default chain) otherwise."""
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    key = env.get(credential_env(role, "AWS_ACCESS_KEY_ID"))
    secret = env.get(credential_env(role, "AWS_SECRET_ACCESS_KEY"))
    if key and secret:
        options["key"] = key
        options["secret"] = secret
        token = env.get(credential_env(role, "AWS_SESSION_TOKEN"))
        if token:
            options["token"] = token
    endpoint = env.get(ENDPOINT_ENV) or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    return options


def filesystem(uri: str, role: str) -> tuple[Any, str]:
    """(fsspec filesystem, path) for `uri`, with the credentials of `role` for s3://."""
    import fsspec

    options = storage_options(role) if uri.startswith("s3://") else {}
    # A fresh instance: credentials of one role are never reused for another location.
    if options:
        options["skip_instance_cache"] = True
    return fsspec.core.url_to_fs(uri, **options)


def upload_directory(local: Path, uri: str, role: str = "output") -> str:
    """Upload every file under `local` to `uri`, hashing the bytes as they are sent; then check
    that the store lists every object with the size sent.  Returns the digest of what was
    uploaded, in the form of `artifacts.digest_files` (sha256 over sorted relative paths and
    file sha256s), so a registered digest is the uploaded bytes' digest."""
    fs, root = filesystem(uri, role)
    root = root.rstrip("/")
    local = Path(local)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    sent: dict[str, int] = {}
    for path in files:
        rel = path.relative_to(local).as_posix()
        if not uri.startswith("s3://"):  # a local or mounted target needs its directories
            fs.makedirs(f"{root}/{rel}".rsplit("/", 1)[0], exist_ok=True)
        file_digest = hashlib.sha256()
        size = 0
        with path.open("rb") as source, fs.open(f"{root}/{rel}", "wb") as target:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                file_digest.update(chunk)
                target.write(chunk)
                size += len(chunk)
        digest.update(f"{rel}\0{file_digest.hexdigest()}\n".encode())
        sent[rel] = size
    fs.invalidate_cache()
    prefix = root.lstrip("/") + "/"
    listed = {name.lstrip("/").removeprefix(prefix): info.get("size")
              for name, info in fs.find(root, detail=True).items()}
    for rel, size in sent.items():
        if listed.get(rel) != size:
            raise OSError(f"{uri}/{rel}: the store lists {listed.get(rel)} bytes after uploading {size}")
    return "sha256:" + digest.hexdigest()


def storage_errors() -> tuple[type[BaseException], ...]:
    """What storage calls raise when access fails: OS errors, and botocore's own (missing
    credentials, endpoint errors), which are not OSErrors."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return (PermissionError, OSError)
    return (PermissionError, OSError, BotoCoreError, ClientError)


def fetch_directory(uri: str, dest: Path, role: str = "output") -> int:
    """Copy every object under `uri` into `dest` (relative paths kept); returns how many."""
    fs, root = filesystem(uri, role)
    root = root.rstrip("/")
    prefix = root.lstrip("/") + "/"
    dest = Path(dest)
    count = 0
    for name in sorted(fs.find(root)):
        rel = name.lstrip("/").removeprefix(prefix)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get(name, str(target))
        count += 1
    return count


def _object_path(uri: str) -> tuple[str, str]:
    """(bucket, key prefix) of an s3:// URI; ValueError for a bucket root or `.`/`..` segments,
    which no removal may ever take as its target."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri}: not an s3:// location")
    bucket, _, key = uri[len("s3://"):].partition("/")
    segments = [part for part in key.split("/") if part]
    if not bucket or not segments:
        raise ValueError(f"{uri}: the root of a bucket is never removed")
    if any(part in (".", "..") for part in segments):
        raise ValueError(f"{uri}: '.' and '..' segments are refused")
    return bucket, "/".join(segments)


def remove_objects(uris: list[str], role: str = "output") -> int:
    """Remove every object at or under each s3:// URI: the object named by the URI itself and the
    objects under `<uri>/`, never a sibling sharing its prefix (`checkpoints` takes nothing of
    `checkpoints-old`). Returns how many objects went; an absent location removes nothing."""
    for uri in uris:
        _object_path(uri)  # refuse the whole list before removing anything
    removed = 0
    for uri in uris:
        bucket, key = _object_path(uri)
        fs, _ = filesystem(uri, role)
        fs.invalidate_cache()
        exact = f"{bucket}/{key}"
        names = [name for name in fs.find(f"{exact}/")] if fs.isdir(exact) else []
        if fs.isfile(exact):
            names.append(exact)
        names = [n for n in names if n == exact or n.startswith(exact + "/")]
        if names:
            fs.rm(names)
            removed += len(names)
    return removed


def _termination_message(problem: str) -> None:
    target = Path(os.environ.get("TERMINATION_MESSAGE_PATH") or "/dev/termination-log")
    if target.exists() or "TERMINATION_MESSAGE_PATH" in os.environ:
        try:
            target.write_text(problem[:4096], encoding="utf-8")
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    """`python -m finetune_trainer.storage fetch URI DIR`: the serving Pods' fetch-artifact init
    container. Exit 0 when at least one object was copied; 1 (message on stderr and in the
    termination log) when the location is empty or cannot be read.

    `python -m finetune_trainer.storage remove URI...`: the cleanup and retention Jobs of s3://
    locations, with the output location's credentials. Exit 0 when every location is gone (or
    was already), 1 when one cannot be removed or is a bucket root."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m finetune_trainer.storage")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="copy an s3:// artifact into a local directory")
    fetch.add_argument("uri")
    fetch.add_argument("dest")
    remove = sub.add_parser("remove", help="remove the objects at and under s3:// locations")
    remove.add_argument("uris", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "remove":
        try:
            count = remove_objects(args.uris)
        except ValueError as exc:
            problem = f"refused: {exc}"
        except storage_errors() as exc:
            problem = f"{' '.join(args.uris)}: cannot be removed ({exc}); check the credentials and the endpoint"
        else:
            print(f"removed {count} objects under {' '.join(args.uris)}")
            return 0
        print(f"error: {problem}", file=sys.stderr)
        _termination_message(problem)
        return 1
    try:
        count = fetch_directory(args.uri, Path(args.dest))
        problem = None if count else f"artifact {args.uri}: no objects under this prefix"
    except storage_errors() as exc:
        problem = f"artifact {args.uri}: cannot be fetched ({exc}); check the credentials and the endpoint"
    if problem is None:
        print(f"artifact {args.uri}: {count} objects fetched into {args.dest}")
        return 0
    print(f"error: {problem}", file=sys.stderr)
    _termination_message(problem)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
