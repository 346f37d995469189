"""A real `symopt serve` process on a free loopback port, for tests and benchmarks that need real HTTP."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from .credentials import read_credentials
from .scheduler.runtime import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = [
    "ROOT",
    "THREAD_VARIABLES",
    "LiveService",
    "free_port",
    "live_service",
    "one_thread_env",
    "restartable_port",
]

ROOT = Path(__file__).resolve().parents[1]

# What torch (OpenMP), MKL and OpenBLAS read for their thread pools at start-up.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def one_thread_env(base: Mapping[str, str] | None = None, /, **extra: str) -> dict[str, str]:
    """An environment (`base`, default os.environ, plus `extra`) for a process that may import
    torch: one thread per library. On a busy 2-core machine a process that starts as many torch
    threads as there are cores runs 16-25x slower than with one (measured on two core training
    tests). Every helper that starts such a process for a test or a benchmark goes through here;
    a test about threads sets its own count in `extra`."""
    return {**(os.environ if base is None else base), **dict.fromkeys(THREAD_VARIABLES, "1"), **extra}


def restartable_port() -> int:
    """A free port for a server that is killed and started again on it: one outside the kernel's
    ephemeral range (what port 0 hands out) and above Ray's worker ports (10002-19999). A port from
    free_port() may be handed to another socket in the seconds between the two starts: the new
    server's own local Ray binds dozens of port-0 sockets before the server binds its port."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = list(range(20_000, max(20_001, low)))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


@dataclass
class LiveService:
    url: str
    api_key: str | None  # a first start's admin key (printed on a terminal, else read from its file)
    home: Path
    process: subprocess.Popen[str]
    output: list[str]


@contextmanager
def live_service(
    home: Path,
    database_url: str | None = None,
    *,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    timeout: float = 90.0,
    port: int | None = None,
) -> Iterator[LiveService]:
    """Start `symopt serve` with SYMOPT_HOME=home (and the database, settings in `env`, extra
    `args`, on `port` or a free one), wait until it is ready, yield where it listens, and stop it
    (SIGTERM, then SIGKILL). Its output is read all along (into `output`): a pipe nobody reads
    fills up after ~64 KiB of access log, and then the service blocks on its next log line.

    On a first start the service makes an admin key; its stdout here is a pipe, not a terminal,
    so it writes the key to the credentials file and prints only where: that is read from there."""
    port = port or restartable_port()
    environment = one_thread_env(SYMOPT_HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), **(env or {}))
    environment.pop("SYMOPT_DATABASE_URL", None)
    if database_url:
        environment["SYMOPT_DATABASE_URL"] = database_url
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), *args],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url, output = f"http://127.0.0.1:{port}", []
    started = threading.Event()
    found: dict[str, str] = {}

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            shown = re.search(r"admin API key \(shown once\): (\S+)", line)
            written = re.search(r"admin API key written to (.+?) \(mode 0600", line)
            if shown:
                found["key"] = shown.group(1)
            elif written and (saved := read_credentials(Path(written.group(1)))) is not None:
                found["key"] = saved["api_key"]
            if "symopt serve: database" in line:
                started.set()

    reader = threading.Thread(target=drain, name="live-service-output", daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                reader.join(timeout=5)
                raise RuntimeError("symopt serve exited early:\n" + "".join(output))
            time.sleep(0.2)
        else:
            raise RuntimeError("symopt serve did not become ready:\n" + "".join(output))
        started.wait(timeout=max(0.0, deadline - time.monotonic()))  # the key line comes before it
        yield LiveService(url, found.get("key"), home, process, output)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(timeout=10)


# Debian's Chromium (scripts/test installs it): Playwright's own browser download does not work on
# these machines. The flags keep a headless run from reaching the network or a GPU.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium through Playwright, for the dashboard's tests and benchmark."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: scripts/test installs Debian's chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
