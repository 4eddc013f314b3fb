"""A minimal double of the Hugging Face Hub's file API, because the real Hub is unreachable here.

It serves model directories from disk at 127.0.0.1 (port 0 unless told) with just what
`huggingface_hub` asks when it downloads a model (`snapshot_download`, `hf_hub_download`,
`from_pretrained`), answered the way the Hub answers:

- `GET /api/models/{repo}` and `GET /api/models/{repo}/revision/{rev}`: id, sha (the commit the
  revision resolves to) and the sibling list;
- `GET /api/models/{repo}/tree/{rev}?recursive=..`: the files with size and oid (weights files
  as LFS entries with their sha256);
- `HEAD|GET /{repo}/resolve/{rev}/{file}`: the file with `X-Repo-Commit`, `ETag` (the git blob
  sha1, or `X-Linked-Etag`/`X-Linked-Size` with the sha256 for LFS files) and `Content-Length`.

A repo has one commit (a digest of its files) reachable as `main`, as any extra ref given, and
by its sha; other revisions are 404 with `X-Error-Code: RevisionNotFound`, unknown repos 404 with
`RepoNotFound`. With a token set, a request without `Authorization: Bearer <token>` gets 401.
Every file GET is counted (`gets`), so tests can prove a shared cache downloads each file once.
Nothing else of the Hub (uploads, xet, search, redirects to a CDN) exists here.

    python -m devcluster.hubserver --repo org/name=/path/to/model [--ref v1] [--token T] [--port N]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass
class _File:
    path: str
    data: bytes
    git_sha1: str
    sha256: str

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)


@dataclass
class _Repo:
    repo_id: str
    files: dict[str, _File]
    commit: str
    refs: set[str] = field(default_factory=lambda: {"main"})

    def resolves(self, revision: str) -> bool:
        return revision in self.refs or revision == self.commit


def _load_repo(repo_id: str, root: Path, refs: tuple[str, ...]) -> _Repo:
    files: dict[str, _File] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        name = path.relative_to(root).as_posix()
        git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        files[name] = _File(name, data, git_sha1, hashlib.sha256(data).hexdigest())
    commit = hashlib.sha1("".join(f"{f.path}:{f.git_sha1}\n" for f in files.values()).encode()).hexdigest()
    return _Repo(repo_id, files, commit, {"main", *refs})


class HubServer:
    """The double, serving in a background thread: `with HubServer({...}) as hub: hub.url`."""

    def __init__(self, repos: dict[str, Path], *, refs: tuple[str, ...] = (), token: str | None = None,
                 port: int = 0):
        self.repos = {rid: _load_repo(rid, Path(root), refs) for rid, root in repos.items()}
        self.token = token
        self.gets: collections.Counter[tuple[str, str]] = collections.Counter()
        self.unauthorized = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def commit(self, repo_id: str) -> str:
        return self.repos[repo_id].commit

    def file_gets(self, repo_id: str) -> dict[str, int]:
        with self._lock:
            return {name: n for (rid, name), n in self.gets.items() if rid == repo_id}

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="hubserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                pass

            def do_HEAD(self):  # noqa: N802 - http.server's naming
                self._answer(head=True)

            def do_GET(self):  # noqa: N802
                self._answer(head=False)

            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                      head: bool = False, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _error(self, status: int, code: str, message: str, head: bool) -> None:
                body = json.dumps({"error": message}).encode()
                self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message} if code else {}, head)

            def _answer(self, head: bool) -> None:
                if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    with hub._lock:
                        hub.unauthorized += 1
                    self._error(401, "", "Invalid credentials in Authorization header", head)
                    return
                path = urlsplit(self.path).path
                if path.startswith("/api/models/"):
                    self._api(path[len("/api/models/"):], head)
                elif "/resolve/" in path:
                    self._resolve(path.lstrip("/"), head)
                else:
                    self._error(404, "", "not served by this Hub double", head)

            def _repo(self, repo_id: str, head: bool) -> _Repo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head)
                return repo

            def _revision(self, repo: _Repo, revision: str, head: bool) -> bool:
                if repo.resolves(revision):
                    return True
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
                return False

            def _api(self, rest: str, head: bool) -> None:
                for marker in ("/revision/", "/tree/"):
                    if marker in rest:
                        repo_id, _, revision = rest.partition(marker)
                        revision = unquote(revision).split("/", 1)[0] if marker == "/tree/" else unquote(revision)
                        break
                else:
                    repo_id, marker, revision = rest.rstrip("/"), "/revision/", "main"
                repo = self._repo(repo_id, head)
                if repo is None or not self._revision(repo, revision, head):
                    return
                if marker == "/tree/":
                    body = [
                        {"type": "file", "oid": f.git_sha1, "size": len(f.data), "path": f.path,
                         **({"lfs": {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}} if f.lfs else {})}
                        for f in repo.files.values()
                    ]
                else:
                    body = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "private": False,
                            "siblings": [{"rfilename": name} for name in repo.files]}
                self._send(200, json.dumps(body).encode(), head=head)

            def _resolve(self, rest: str, head: bool) -> None:
                repo_id, _, tail = rest.partition("/resolve/")
                revision, _, name = tail.partition("/")
                repo = self._repo(repo_id, head)
                if repo is None or not self._revision(repo, unquote(revision), head):
                    return
                entry = repo.files.get(unquote(name))
                if entry is None:
                    self._error(404, "EntryNotFound", f"{name} does not exist on {revision}", head)
                    return
                headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{entry.git_sha1}"', "Accept-Ranges": "bytes"}
                if entry.lfs:
                    headers |= {"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(len(entry.data))}
                if not head:
                    with hub._lock:
                        hub.gets[(repo.repo_id, entry.path)] += 1
                self._send(200, entry.data, headers, head, "application/octet-stream")

        return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", action="append", required=True, help="org/name=/path/to/model/dir")
    parser.add_argument("--ref", action="append", default=[], help="extra branch or tag name of every repo")
    parser.add_argument("--token", default=None, help="bearer token every request must carry")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    repos = dict(item.split("=", 1) for item in args.repo)
    hub = HubServer({k: Path(v) for k, v in repos.items()}, refs=tuple(args.ref), token=args.token, port=args.port)
    print(json.dumps({"url": hub.url, "commits": {rid: hub.commit(rid) for rid in hub.repos}}), flush=True)
    try:
        hub._server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
