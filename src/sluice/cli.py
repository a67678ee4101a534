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


def _seconds(text: str) -> float:
    from sluice.core import PolicyError, parse_duration

    try:
        return parse_duration(text)
    except PolicyError as e:
        raise argparse.ArgumentTypeError(e.message) from e


def _operator(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from sluice.operator import OperatorOptions, run

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("kopf").setLevel(logging.WARNING)
    # Never, even with -v: kubernetes_asyncio logs response bodies (Secrets included) at DEBUG.
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    options = OperatorOptions(
        kubeconfig=args.kubeconfig,
        namespace=None if args.all_namespaces else args.namespace,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        default_policy=args.default_policy,
        **({"identity": args.identity} if args.identity else {}),
    )
    return asyncio.run(run(options))


def _add_operator(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    import os

    operator = commands.add_parser(
        "operator",
        help="probe Upstreams, run their breakers, write status and Events (Kubernetes)",
        description="The Sluice operator. Only the replica holding the leader Lease works; "
        "others wait to take over.",
    )
    operator.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="default: in-cluster ServiceAccount, else $KUBECONFIG or ~/.kube/config",
    )
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        default=os.environ.get("SLUICE_NAMESPACE", "default"),
        help="watch this namespace (default: $SLUICE_NAMESPACE or 'default')",
    )
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace")
    operator.add_argument(
        "--metrics-address",
        default="0.0.0.0",  # noqa: S104
        help="address for /metrics and /healthz (default: 0.0.0.0)",
    )
    operator.add_argument("--metrics-port", type=int, default=9090)
    operator.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the leader Lease (default: $POD_NAMESPACE or 'default')",
    )
    operator.add_argument("--lease-name", default="sluice-operator")
    operator.add_argument("--lease-duration", type=_seconds, default=15.0, metavar="DURATION")
    operator.add_argument("--renew-deadline", type=_seconds, default=10.0, metavar="DURATION")
    operator.add_argument("--retry-period", type=_seconds, default=2.0, metavar="DURATION")
    operator.add_argument(
        "--identity",
        default=os.environ.get("POD_NAME"),
        help="this replica's name in the Lease (default: $POD_NAME or host-pid)",
    )
    operator.add_argument(
        "--default-policy",
        default="default",
        help="BreakerPolicy used where an Upstream names none (default: 'default')",
    )
    operator.add_argument("-v", "--verbose", action="store_true")
    operator.set_defaults(handler=_operator)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description="Sluice: a Kubernetes-native gateway for LLM APIs that keeps serving "
        "when providers fail.",
    )
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_operator(commands)
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
