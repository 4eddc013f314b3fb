"""A real S3 server for tests: SeaweedFS (`weed server -s3`) on 127.0.0.1.

`s3_server` (module scope) builds or finds the `weed` binary with `hack/seaweedfs/install.sh`
(the `seaweedfs` Makefile target; a cold build takes minutes, a warm one nothing), starts a
master, a volume server, a filer and the S3 gateway in one process on free loopback ports with
a temporary data directory and one S3 identity (an access key and secret made up per run),
waits until the gateway answers an authenticated request, and creates the bucket `BUCKET`.
It stops the process at teardown; a failing start prints the tail of its log.

Use it from a test module with `from tests.s3 import s3_server  # noqa: F401`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "hack" / "seaweedfs" / "install.sh"
BUCKET = "finetune-test"
START_TIMEOUT = 90.0
LOG_TAIL_LINES = 40


@dataclasses.dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def filesystem(self):
        """An s3fs filesystem with this server's credentials (a fresh instance each call)."""
        import s3fs

        return s3fs.S3FileSystem(key=self.access_key, secret=self.secret_key, endpoint_url=self.endpoint,
                                 skip_instance_cache=True)


def weed_binary() -> Path:
    """Build (or find) `weed`; fails the test with the build's own message when impossible."""
    result = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{INSTALL.relative_to(ROOT)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1]) / "weed"


def _free_ports(count: int) -> list[int]:
    """Free loopback ports, each with port+10000 free too (SeaweedFS's default gRPC offset)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def start_s3_server(workdir: Path) -> S3Server:
    binary = weed_binary()
    master, volume, filer, s3 = _free_ports(4)
    access_key = "AK" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(30)
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    data = workdir / "data"
    data.mkdir()
    log_path = workdir / "weed.log"
    args = [
        str(binary), "server",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
        f"-master.port={master}", f"-master.port.grpc={master + 10000}", "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", f"-volume.port.grpc={volume + 10000}", "-volume.max=8",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer + 10000}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3 + 10000}", f"-s3.config={config}",
        f"-s3.localSocket={workdir / 's3.sock'}", "-s3.port.iceberg=0",
    ]
    log = log_path.open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                               env={**os.environ, "HOME": str(workdir)})
    log.close()
    server = S3Server(endpoint=f"http://127.0.0.1:{s3}", access_key=access_key, secret_key=secret_key,
                      bucket=BUCKET, log_path=log_path, process=process)
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with {process.returncode}:\n{server.log_tail()}")
        try:
            fs = server.filesystem()
            fs.mkdir(BUCKET)
            fs.pipe(f"{BUCKET}/.ready", b"ok")
            if fs.cat(f"{BUCKET}/.ready") == b"ok":
                fs.rm(f"{BUCKET}/.ready")
                return server
        except Exception as exc:  # not up yet: connection refused, 503 while volumes start
            last = exc
        time.sleep(0.5)
    stop_s3_server(server)
    raise RuntimeError(f"the S3 gateway at {server.endpoint} did not answer in {START_TIMEOUT:.0f}s "
                       f"({last!r}):\n{server.log_tail()}")


def stop_s3_server(server: S3Server) -> None:
    # A throwaway server over a temporary directory: nothing to flush. SeaweedFS's own shutdown
    # waits about 20 s for connections to drain; a few seconds' grace, then it is killed.
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    try:
        server = start_s3_server(tmp_path_factory.mktemp("seaweedfs"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    stop_s3_server(server)
