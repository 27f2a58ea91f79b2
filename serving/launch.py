"""Start `bentoml serve` (the service or a built Bento) as a child process; return once it is ready."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.errors import ShopError
from core.paths import repo_root


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(
    port: int,
    env: dict[str, str],
    log: Path,
    ready_within_s: float = 300,
    target: str = "serving.service:Shopaug",
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Run `target` (the service, or a built Bento's tag) on 127.0.0.1:`port` with environment `env` in `cwd`
    (default: the repository), output to `log`; return once /readyz is 200.

    Raises ShopError with the log's tail when the process exits or is not ready in time (the process is killed).
    """
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bentoml",
                "serve",
                target,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=cwd or repo_root(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + ready_within_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    _kill_group(proc)
    raise ShopError(f"bentoml serve did not become ready (see {log}):\n{log.read_text()[-4000:]}")


def stop_service(proc: subprocess.Popen, within_s: float = 20) -> None:
    """Terminate the service; kill it if it has not exited within `within_s`, and any worker left behind."""
    proc.terminate()
    try:
        proc.wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the server and its workers (its own session: start_new_session), so no worker outlives it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
