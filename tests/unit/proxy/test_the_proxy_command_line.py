"""`sluice proxy` flags documented in docs/operations.md: --no-access-log and --loop."""

from __future__ import annotations

import asyncio
import sys

import uvloop

from sluice.cli import _access_log, _event_loop, build_parser
from sluice.proxy.server import AccessLog


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
