"""`sluice controlplane up`: what a person runs to try kubectl flows without a cluster."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from sluice.devcluster import Tools


def test_up_prints_a_working_kubeconfig_and_ctrl_c_stops_everything(tools: Tools) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "sluice", "controlplane", "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        _drive(process, tools)


def _drive(process: subprocess.Popen[str], tools: Tools) -> None:
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 90
        kubeconfig = None
        while kubeconfig is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, (
                f"exited early: {process.wait()} {process.stderr.read() if process.stderr else ''}"
            )
            lines.append(line)
            if match := re.search(r"export KUBECONFIG=(\S+)", line):
                kubeconfig = Path(match.group(1))
        assert kubeconfig is not None, "".join(lines)

        namespaces = subprocess.run(
            [str(tools.kubectl), "get", "namespaces", "-o", "name"],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert "namespace/default" in namespaces.stdout.split()

        process.send_signal(signal.SIGINT)  # what Ctrl-C does
        assert process.wait(timeout=30) == 0
        assert not kubeconfig.parent.exists(), "the temp dir should be removed on exit"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
