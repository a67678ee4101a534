"""The ``sluice`` command: one entry point, a subcommand per component."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from sluice import __version__


def _controlplane_build(args: argparse.Namespace) -> int:
    from sluice.devcluster import AssetsError, ensure_binaries, ensure_tools

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        binaries = ensure_binaries(log)
        tools = None if args.no_tools else ensure_tools(log)
    except AssetsError as e:
        print(f"sluice: {e}", file=sys.stderr)
        return 1
    print(f"etcd            {binaries.etcd}  (from {binaries.source})")
    print(f"kube-apiserver  {binaries.kube_apiserver}  (from {binaries.source})")
    if tools is not None:
        print(f"helm            {tools.helm}")
        print(f"kubectl         {tools.kubectl}")
    return 0


def _controlplane_up(args: argparse.Namespace) -> int:
    from sluice.devcluster import AssetsError, ensure_binaries
    from sluice.devcluster.cluster import ControlPlane, ControlPlaneError

    try:
        binaries = ensure_binaries(lambda m: print(m, file=sys.stderr))
    except AssetsError as e:
        print(f"sluice: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        plane = ControlPlane.start(binaries, workdir=args.dir)
    except ControlPlaneError as e:
        print(f"sluice: {e}", file=sys.stderr)
        return 1
    with plane:
        print(
            f"kube-apiserver {plane.server} is up (etcd {plane.etcd_url}); data in {plane.workdir}"
        )
        print("Use it from another shell with:")
        print(f"  export KUBECONFIG={plane.kubeconfig}")
        print("Ctrl-C stops it.", flush=True)
        while not stop.wait(0.5):
            if not plane.running:
                print("sluice: a control-plane process exited; stopping", file=sys.stderr)
                return 1
        print("stopping ...", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description="Sluice: a Kubernetes-native gateway for LLM APIs that keeps serving "
        "when providers fail.",
    )
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    controlplane = commands.add_parser(
        "controlplane",
        help="a real kube-apiserver and etcd on loopback: kubectl flows without a cluster",
        description="A real kube-apiserver and etcd on 127.0.0.1 (no kubelet: objects, RBAC and "
        "validation are real, pods never run). Binaries come from KUBEBUILDER_ASSETS or are "
        "built once from the Go module proxy into ~/.cache/sluice.",
    )
    cp_commands = controlplane.add_subparsers(
        dest="controlplane_command", metavar="ACTION", required=True
    )
    build = cp_commands.add_parser(
        "build", help="find or build etcd and kube-apiserver, fetch helm and kubectl"
    )
    build.add_argument("--no-tools", action="store_true", help="skip fetching helm and kubectl")
    build.set_defaults(handler=_controlplane_build)
    up = cp_commands.add_parser(
        "up", help="start the control plane in the foreground; Ctrl-C stops it"
    )
    up.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="keep certificates, kubeconfig and etcd data here "
        "(default: a temp dir, removed on exit)",
    )
    up.set_defaults(handler=_controlplane_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    return int(handler(args))
