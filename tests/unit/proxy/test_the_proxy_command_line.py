"""`sluice proxy` flags documented in docs/operations.md and docs/security.md."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop

from sluice.cli import _access_log, _event_loop, _serving, build_parser, main
from sluice.proxy.accesslog import AccessLog


def test_the_access_log_is_on_by_default_and_can_be_turned_off() -> None:
    parser = build_parser()

    default = parser.parse_args(["proxy", "--manifests", "x.yaml"])
    off = parser.parse_args(["proxy", "--manifests", "x.yaml", "--no-access-log"])

    on_log = _access_log(default.access_log)
    assert isinstance(on_log, AccessLog)
    assert on_log.stream is sys.stderr
    assert _access_log(off.access_log) is None


def test_the_loop_is_uvloop_unless_asyncio_is_asked_for() -> None:
    args = build_parser().parse_args(["proxy", "--manifests", "x.yaml"])

    loops = {choice: _event_loop(choice) for choice in (args.loop, "uvloop", "asyncio")}
    try:
        assert args.loop == "auto"
        assert isinstance(loops["auto"], uvloop.Loop)
        assert isinstance(loops["uvloop"], uvloop.Loop)
        assert not isinstance(loops["asyncio"], uvloop.Loop)
        assert isinstance(loops["asyncio"], asyncio.AbstractEventLoop)
    finally:
        for loop in loops.values():
            loop.close()


@pytest.mark.parametrize(
    ("flags", "hosts"),
    [
        (["--manifests", "x.yaml"], ("localhost", "127.0.0.1", "[::1]")),
        (["--manifests", "x.yaml", "--host", "::1"], ("localhost", "127.0.0.1", "[::1]")),
        (["--manifests", "x.yaml", "--host", "0.0.0.0"], ()),  # noqa: S104
        (["--kubernetes", "--host", "127.0.0.1"], ()),
        (
            ["--manifests", "x.yaml", "--allowed-hosts", "gw.example, *.svc"],
            ("gw.example", "*.svc"),
        ),
    ],
)
def test_a_loopback_proxy_answers_only_loopback_names_unless_told(
    flags: list[str], hosts: tuple[str, ...]
) -> None:
    args = build_parser().parse_args(["proxy", *flags])

    assert _serving(args).allowed_hosts.patterns == hosts


def test_limits_client_keys_and_the_admin_port_come_from_flags(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("sk-client-key-0001\n")
    args = build_parser().parse_args(
        [
            "proxy",
            "--manifests",
            "x.yaml",
            "--client-keys",
            str(keys),
            "--admin-port",
            "9001",
            "--max-concurrent-requests",
            "7",
            "--max-request-bytes",
            "1000",
            "--max-answer-bytes",
            "2000",
        ]
    )

    serving = _serving(args)

    assert serving.client_keys is not None
    assert serving.client_keys.client("sk-client-key-0001") == "line 1"
    assert (serving.admin_port, serving.admin_host) == (9001, "127.0.0.1")
    limits = serving.limits
    assert (limits.max_concurrent_requests, limits.max_request_bytes) == (7, 1000)
    assert limits.max_answer_bytes == 2000


def test_unreadable_client_keys_stop_the_start_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "upstreams.yaml").write_text("")
    keys = tmp_path / "keys"
    keys.write_text("# none yet\n")

    status = main(["proxy", "--manifests", str(tmp_path), "--client-keys", str(keys)])

    assert status == 1
    assert f"sluice: {keys}: no client keys" in capsys.readouterr().err


def test_a_limit_must_be_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["proxy", "--manifests", "x", "--max-concurrent-requests", "0"])

    assert "0 must be at least 1" in capsys.readouterr().err


def test_the_proxys_own_process_tunes_its_garbage_collector() -> None:
    code = (
        "import gc; from sluice.proxy.server import GC_YOUNG_THRESHOLD, tune_gc; tune_gc(); "
        "print(gc.get_threshold()[0] == GC_YOUNG_THRESHOLD, gc.get_freeze_count() > 1000)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.split() == ["True", "True"]
