"""Starts a real glassboxd on a free loopback port for the whole test session.

The binary is $GLASSBOX_SERVER_BIN; when that is unset, build/server/service/glassboxd in the
repository or /work/build/server/service/glassboxd. If GLASSBOX_SERVER_BIN is set and missing,
the suite fails; if it is unset and no binary exists, the server tests are skipped, loudly.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from _helpers import DEMO_MODEL, FIXTURES, REPO_ROOT

import glassbox

_DEFAULT_BINARIES = (
    REPO_ROOT / "build" / "server" / "service" / "glassboxd",
    Path("/work/build/server/service/glassboxd"),
)
_READY = re.compile(r"glassboxd: listening on (\S+)")
_STARTUP_SECONDS = 120
_SHUTDOWN_SECONDS = 60


def _server_binary() -> Path:
    explicit = os.environ.get("GLASSBOX_SERVER_BIN")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            pytest.fail(f"GLASSBOX_SERVER_BIN={explicit} does not exist; build target glassboxd")
        return path
    for path in _DEFAULT_BINARIES:
        if path.is_file():
            return path
    reason = (
        "!!! NO glassboxd BINARY: every test that needs a live server is SKIPPED. Build the "
        "`glassboxd` target and/or set GLASSBOX_SERVER_BIN (looked in "
        + ", ".join(str(p) for p in _DEFAULT_BINARIES)
        + ") !!!"
    )
    sys.stderr.write(f"\n{reason}\n")
    pytest.skip(reason)


class Server:
    def __init__(self, process: subprocess.Popen, address: str, log: List[str]) -> None:
        self.process = process
        self.address = address
        self.log = log


def start_glassboxd(args: List[str]) -> Server:
    """Starts glassboxd with ``args`` (its models, flags; --listen and --device are added) and
    waits until it listens; fails the test if it does not."""
    command = [str(_server_binary()), *args, "--listen", "127.0.0.1:0", "--device", "cpu"]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    log: List[str] = []
    lines: "queue.Queue[str | None]" = queue.Queue()

    def drain() -> None:  # keeps reading so the server never blocks on a full stderr pipe
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, name="glassboxd-stderr", daemon=True).start()

    address = None
    deadline = time.monotonic() + _STARTUP_SECONDS
    while address is None:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(remaining, 0.01))
        except queue.Empty:
            process.kill()
            pytest.fail(f"glassboxd did not print 'listening on' within {_STARTUP_SECONDS}s:\n{''.join(log)}")
        if line is None:
            process.wait()
            pytest.fail(f"glassboxd exited with {process.returncode} before listening:\n{''.join(log)}")
        match = _READY.search(line)
        if match:
            address = match.group(1)
    return Server(process, address, log)


def stop_glassboxd(server: Server) -> None:
    """SIGTERM, then the exit must be 0 (and the server must not have died before)."""
    process, log = server.process, server.log
    if process.poll() is not None:
        pytest.fail(f"glassboxd died during the tests (exit {process.returncode}):\n{''.join(log)}")
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=_SHUTDOWN_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"glassboxd did not exit within {_SHUTDOWN_SECONDS}s of SIGTERM:\n{''.join(log)}")
    assert code == 0, f"glassboxd exited with {code} after SIGTERM:\n{''.join(log)}"


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    models = FIXTURES / "models"
    server = start_glassboxd([
        "--model", f"tiny-gpt2={models / 'tiny-gpt2'}",
        "--model", f"tiny-llama={models / 'tiny-llama'}",
        "--model", f"demo={DEMO_MODEL}",
        "--sae", f"res1={FIXTURES / 'saes' / 'service' / 'res1_standard'}@tiny-gpt2",
        "--sae", f"z0={FIXTURES / 'saes' / 'service' / 'z0_jumprelu'}@tiny-gpt2",
    ])
    yield server
    stop_glassboxd(server)


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[glassbox.Client]:
    with glassbox.connect(server.address, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def gpt2(client: glassbox.Client) -> glassbox.Model:
    return client.model("tiny-gpt2")


@pytest.fixture(scope="session")
def llama(client: glassbox.Client) -> glassbox.Model:
    return client.model("tiny-llama")


@pytest.fixture(scope="session", params=["tiny-gpt2", "tiny-llama"])
def model(request: pytest.FixtureRequest, client: glassbox.Client) -> glassbox.Model:
    return client.model(request.param)
