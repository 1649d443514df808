"""A real ``banditd serve`` subprocess on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
JAX_CACHE = ROOT / ".jax_cache"


class ServerProcess:
    def __init__(self, data_dir: pathlib.Path, *extra: str, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.extra = extra
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log_path = data_dir / "server.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "OPENBLAS_NUM_THREADS": "1",
            "BANDITD_JAX_CACHE": str(JAX_CACHE),
            "JAX_PLATFORMS": "cpu",
            **self.env,
        }
        cmd = [
            sys.executable,
            "-m",
            "banditd.clients.cli",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *self.extra,
        ]
        log = open(self.log_path, "a")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log()}")
                continue
            if "listening on" in line:
                self.port = int(line.rsplit(":", 1)[1])
                return self
        self.kill()
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
