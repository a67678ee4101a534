"""The ``sluice`` command: one entry point, a subcommand per component."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sluice import __version__

if TYPE_CHECKING:
    from sluice.proxy.accesslog import AccessLog
    from sluice.proxy.reporting import ReporterOptions
    from sluice.proxy.server import Serving


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
    if args.node:
        from sluice.devcluster.nodeassets import ensure_node_binaries

        try:
            node = ensure_node_binaries(log)
        except AssetsError as e:
            print(f"sluice: {e}", file=sys.stderr)
            return 1
        print(f"node            {node.kubelet.parent}  (from {node.source})")
        print(f"pause image     {node.pause_image}")
    return 0


def _controlplane_image(args: argparse.Namespace) -> int:
    """Print the image's reference alone on stdout (for scripts); the rest goes to stderr."""
    import time

    from sluice.devcluster.image import ImageError, cache_bytes, ensure_image, load_into_containerd

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    started = time.monotonic()
    try:
        image = ensure_image(log=log)
        if args.containerd:
            load_into_containerd(image.archive, args.containerd, args.namespace)
            log(f"imported into containerd {args.containerd} (namespace {args.namespace})")
    except ImageError as e:
        print(f"sluice: {e}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    log(f"{'built' if image.built else 'cached'} in {took:.1f}s; archive {image.archive}")
    log(f"image cache: {cache_bytes() / 2**20:.0f} MiB")
    print(image.reference)
    return 0


def _controlplane_up(args: argparse.Namespace) -> int:
    if args.node:
        from sluice.devcluster.nodecli import up_with_node

        return up_with_node(args.dir)
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
        report_port=args.report_port or None,
        report_address=_report_address(args),
        report_interval=args.report_interval,
        report_users=frozenset(args.report_user or [_default_report_user(args)]),
        **({"identity": args.identity} if args.identity else {}),
    )
    return asyncio.run(run(options))


def _report_address(args: argparse.Namespace) -> str | None:
    """Where proxies reach this replica's report port: --report-address, else $POD_IP."""
    import os

    if args.report_address:
        return str(args.report_address)
    pod_ip = os.environ.get("POD_IP")
    return f"{pod_ip}:{args.report_port}" if pod_ip and args.report_port else None


def _default_report_user(args: argparse.Namespace) -> str:
    return f"system:serviceaccount:{args.lease_namespace}:sluice-proxy"


def _add_cluster_scope(parser: argparse.ArgumentParser, *, when: str) -> None:
    """--kubeconfig, and --namespace or --all-namespaces: where in which cluster to look."""
    import os

    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help=f"{when}default: in-cluster ServiceAccount, else $KUBECONFIG or ~/.kube/config",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        default=os.environ.get("SLUICE_NAMESPACE", "default"),
        help=f"{when}watch this namespace (default: $SLUICE_NAMESPACE or 'default')",
    )
    scope.add_argument("--all-namespaces", action="store_true", help=f"{when}watch every namespace")


def _add_operator(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    import os

    operator = commands.add_parser(
        "operator",
        help="probe Upstreams, run their breakers, write status and Events (Kubernetes)",
        description="The Sluice operator. Only the replica holding the leader Lease works; "
        "others wait to take over.",
    )
    _add_cluster_scope(operator, when="")
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
    operator.add_argument(
        "--report-port",
        type=int,
        default=9091,
        help="port proxy replicas report to (POST /v1/reports; 0: off; default: 9091)",
    )
    operator.add_argument(
        "--report-address",
        default=None,
        help="host:port at which proxies reach this replica's report port, written on the "
        "Lease while leading (default: $POD_IP:PORT)",
    )
    operator.add_argument(
        "--report-user",
        action="append",
        metavar="USER",
        help="who may report, as TokenReview names them; repeatable (default: "
        "system:serviceaccount:<lease namespace>:sluice-proxy)",
    )
    operator.add_argument(
        "--report-interval",
        type=_seconds,
        default=1.0,
        metavar="DURATION",
        help="how often replicas are told to report (default: 1s)",
    )
    operator.add_argument("-v", "--verbose", action="store_true")
    operator.set_defaults(handler=_operator)


def _logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _admin_token(args: argparse.Namespace) -> str | None:
    import os

    if args.admin_token_file is not None:
        return str(args.admin_token_file.read_text().strip()) or None
    return os.environ.get("SLUICE_ADMIN_TOKEN") or None


def _event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """uvloop's loop for "uvloop" (an error if it is missing) and for "auto" when installed."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("sluice: --loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _access_log(enabled: bool) -> AccessLog | None:
    """One JSON object per request on stderr, as is: log collectors parse it. Batched: a write
    per request cost a fifth of the proxy's throughput; at least every 0.5 s it is written."""
    from sluice.proxy.accesslog import AccessLog

    return AccessLog(sys.stderr) if enabled else None


def _serving(args: argparse.Namespace) -> Serving:
    """Who may call, the limits and the admin port, from the flags. Without --allowed-hosts a
    proxy serving manifests on a loopback address answers only loopback names: a web page
    cannot reach it through DNS rebinding."""
    import ipaddress

    from sluice.proxy.access import LOOPBACK_HOSTS, ClientKeys, HostAllowlist
    from sluice.proxy.limits import Limits
    from sluice.proxy.server import Serving

    hosts = args.allowed_hosts
    if hosts is None and not args.kubernetes:
        with contextlib.suppress(ValueError):
            if args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback:
                hosts = ",".join(LOOPBACK_HOSTS)
    return Serving(
        client_keys=ClientKeys.load(args.client_keys) if args.client_keys else None,
        allowed_hosts=HostAllowlist.parse(hosts or ""),
        limits=Limits(
            max_request_bytes=args.max_request_bytes,
            max_answer_bytes=args.max_answer_bytes,
            max_concurrent_requests=args.max_concurrent_requests,
            max_connections=args.max_connections,
        ),
        admin_port=args.admin_port,
        admin_host=args.host,
    )


def _proxy(args: argparse.Namespace) -> int:
    from sluice.proxy.access import AccessError
    from sluice.proxy.manifests import ManifestError
    from sluice.proxy.server import serve

    _logging(args.verbose)
    access_log = _access_log(args.access_log)
    try:
        serving = _serving(args)
        if args.kubernetes:
            from sluice.proxy import kubernetes

            app = kubernetes.build(
                kubernetes.KubernetesOptions(
                    kubeconfig=args.kubeconfig,
                    namespace=None if args.all_namespaces else args.namespace,
                    admin_token=_admin_token(args),
                    access_log=access_log,
                    stale_after=args.stale_after,
                    serving=serving,
                    report=_report_options(args),
                )
            )
        else:
            from sluice.proxy import standalone

            app = standalone.build(
                standalone.StandaloneOptions(
                    paths=tuple(args.manifests),
                    admin_token=_admin_token(args),
                    access_log=access_log,
                    serving=serving,
                )
            )
        loop = _event_loop(args.loop)
        try:
            loop.run_until_complete(
                serve(app, host=args.host, port=args.port, limits=serving.limits, tune=True)
            )
        finally:
            loop.close()
    except (ManifestError, AccessError) as e:
        print(f"sluice: {e}", file=sys.stderr)
        return 1
    return 0


def _report_options(args: argparse.Namespace) -> ReporterOptions | None:
    """--report-to and its token: where this replica reports, as whom."""
    import os
    import socket

    from sluice.proxy.reporting import ReporterOptions

    if not args.report_to:
        return None
    replica = args.replica_name or os.environ.get("POD_NAME") or socket.gethostname()
    return ReporterOptions(url=args.report_to, replica=replica, token_file=args.report_token_file)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _add_proxy(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sluice.proxy.limits import Limits

    proxy = commands.add_parser(
        "proxy",
        help="the OpenAI-compatible gateway (from a cluster, or from manifests on disk)",
        description="Serve the OpenAI API in front of Upstreams, routing around open circuits. "
        "--kubernetes follows the cluster's resources and the operator's breakers; --manifests "
        "reads files (read again when they change) and runs breakers and probes in-process.",
    )

    source = proxy.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--manifests",
        type=Path,
        action="append",
        metavar="PATH",
        help="serve the manifests in this YAML file or directory (repeatable)",
    )
    source.add_argument(
        "--kubernetes",
        action="store_true",
        help="watch Upstreams, BreakerPolicies and ModelRoutes in the cluster",
    )
    _add_cluster_scope(proxy, when="with --kubernetes: ")
    proxy.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    proxy.add_argument("--port", type=int, default=8080, help="default: 8080")
    proxy.add_argument(
        "--admin-token-file",
        type=Path,
        default=None,
        help="bearer token for /admin (default: $SLUICE_ADMIN_TOKEN; none: disabled)",
    )
    proxy.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="serve /admin on this port only (same --host), not on the API port",
    )
    proxy.add_argument(
        "--client-keys",
        type=Path,
        default=None,
        metavar="PATH",
        help="require a client API key (Bearer or x-api-key) on /v1: a file with one key per line, "
        "or a directory as Kubernetes mounts a Secret (one key per file, named for its client); "
        "read again when it changes (default: no key needed)",
    )
    proxy.add_argument(
        "--allowed-hosts",
        default=None,
        metavar="LIST",
        help="comma-separated Host names the proxy answers (*.example.com globs; ports ignored); "
        "others get 421 (default: loopback names when serving manifests on a loopback --host, "
        "else any)",
    )
    limits = Limits()
    proxy.add_argument(
        "--max-concurrent-requests",
        type=_positive,
        default=limits.max_concurrent_requests,
        metavar="N",
        help="requests in progress on this replica; beyond it a fast 503 with Retry-After "
        f"(default: {limits.max_concurrent_requests})",
    )
    proxy.add_argument(
        "--max-connections",
        type=_positive,
        default=limits.max_connections,
        metavar="N",
        help="client connections open at once; beyond it new ones are closed at once "
        f"(default: {limits.max_connections})",
    )
    proxy.add_argument(
        "--max-request-bytes",
        type=_positive,
        default=limits.max_request_bytes,
        metavar="N",
        help=f"largest request body; beyond it 413 (default: {limits.max_request_bytes})",
    )
    proxy.add_argument(
        "--max-answer-bytes",
        type=_positive,
        default=limits.max_answer_bytes,
        metavar="N",
        help="largest non-streamed upstream answer; beyond it 502 answer_too_large "
        f"(default: {limits.max_answer_bytes})",
    )
    proxy.add_argument(
        "--stale-after",
        type=_seconds,
        default=120.0,
        metavar="DURATION",
        help="with --kubernetes: /readyz fails once the watch has not confirmed the routing "
        "table for this long (default: 120s)",
    )
    proxy.add_argument(
        "--report-to",
        metavar="URL",
        help="with --kubernetes: report usage to the operator leader at this URL (its "
        "Service, e.g. http://sluice-operator:9091) and enforce the rate-limit shares it answers",
    )
    proxy.add_argument(
        "--report-token-file",
        type=Path,
        metavar="PATH",
        help="the projected ServiceAccount token (audience sluice-operator) reports carry; "
        "read again when it changes",
    )
    proxy.add_argument(
        "--replica-name",
        help="this replica's name in reports (default: $POD_NAME, else the host name)",
    )
    proxy.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="do not write a JSON line per request to stderr",
    )
    proxy.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop (default: auto, uvloop when installed)",
    )
    proxy.add_argument("-v", "--verbose", action="store_true")
    proxy.set_defaults(handler=_proxy)


def _fake_upstream(args: argparse.Namespace) -> int:
    import asyncio

    from sluice.fakes import fake_for

    options: dict[str, object] = {
        "name": args.name,
        "port": args.port,
        "flaky": args.flaky,
        "host": args.host,
    }
    if args.model:
        options["models"] = tuple(args.model)
    if args.api_key is not None:
        if args.provider not in ("anthropic", "azure-openai"):
            raise SystemExit("--api-key: only the anthropic and azure-openai fakes check keys")
        options["api_key"] = args.api_key

    async def run() -> None:
        fake = fake_for(args.provider, **options)
        await fake.start()
        print(
            f"fake {args.provider} upstream {args.name} on {fake.base_url} "
            f"(SDK root {fake.root_url}; serving {', '.join(fake.models)})",
            flush=True,
        )
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def _add_fake_upstream(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fake = commands.add_parser(
        "fake-upstream",
        help="a fake OpenAI, Anthropic or Azure OpenAI upstream on 127.0.0.1, for demos and tests",
        description="openai: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings, "
        "/v1/responses. anthropic: /v1/messages, /v1/models. azure-openai: "
        "/openai/deployments/{deployment}/... with api-version, and /openai/v1/... "
        "Requests can ask it to fail: x-fake-status, x-fake-delay, x-fake-reset, "
        "x-fake-cut-after, x-fake-stall-after, x-fake-stream-error (see sluice/fakes/).",
    )
    fake.add_argument(
        "--provider",
        choices=("openai", "openai-compatible", "anthropic", "azure-openai"),
        default="openai",
        help="the API it speaks (default: openai)",
    )
    fake.add_argument("--name", default="fake")
    fake.add_argument("--port", type=int, default=18101)
    fake.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 in a pod behind a Service)",
    )
    fake.add_argument(
        "--model",
        action="append",
        help="a model (for azure-openai, a deployment) it serves (repeatable)",
    )
    fake.add_argument(
        "--api-key",
        default=None,
        help="anthropic and azure-openai: the only key accepted (default: any key)",
    )
    fake.add_argument(
        "--flaky", type=float, default=0.0, help="fraction of requests answered 503 (default: 0)"
    )
    fake.set_defaults(handler=_fake_upstream)


def _demo(args: argparse.Namespace) -> int:
    import asyncio
    from importlib import resources

    from aiohttp import web

    from sluice.fakes import FakeUpstream
    from sluice.proxy.access import LOOPBACK_HOSTS, HostAllowlist
    from sluice.proxy.server import Serving
    from sluice.proxy.standalone import StandaloneOptions, build

    _logging(verbose=False)
    examples = Path(str(resources.files("sluice") / "examples"))
    if not examples.is_dir():
        examples = Path(__file__).resolve().parents[2] / "examples"

    async def run() -> None:
        fakes = [
            FakeUpstream(name="primary", port=18101, flaky=args.flaky),
            FakeUpstream(name="secondary", port=18102),
        ]
        for fake in fakes:
            await fake.start()
        options = StandaloneOptions(
            paths=(examples,),
            admin_token="demo",  # noqa: S106 - the demo's admin token, printed below
            access_log=_access_log(enabled=True),
            # Open to any client on this machine, and to no web page (DNS rebinding).
            serving=Serving(allowed_hosts=HostAllowlist.parse(LOOPBACK_HOSTS)),
        )
        runner = web.AppRunner(
            build(options), access_log=None, keepalive_timeout=options.serving.limits.idle_timeout
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        base = f"http://127.0.0.1:{args.port}"
        print(
            DEMO_TEXT.format(base=base, examples=examples, flaky=round(args.flaky * 100)),
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            for fake in fakes:
                await fake.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


DEMO_TEXT = """
Sluice is serving the OpenAI API on {base} (manifests: {examples}).
Upstream "primary" (127.0.0.1:18101) fails {flaky}% of requests; "secondary" (18102) is healthy.
Model m1 routes to primary first, then secondary.

  curl -s {base}/v1/chat/completions -H 'content-type: application/json' \\
       -d '{{"model":"m1","messages":[{{"role":"user","content":"hi"}}]}}' -D - | grep -i x-sluice
  curl -s {base}/health                         # breakers: ok / degraded / unhealthy
  curl -s {base}/metrics | grep sluice_         # Prometheus metrics
  curl -s -X POST -H 'Authorization: Bearer demo' {base}/admin/breakers/default/primary/open

The console: {base}/ui (admin token: demo).

Each request logs one JSON line below: watch "attempts" fail over from primary to secondary,
and primary's circuit open after 3 failures in a row. Ctrl-C stops everything.
"""


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="the standalone proxy with the example manifests and two fake upstreams",
        description="Starts fake upstreams on 127.0.0.1:18101 (flaky) and :18102, and the proxy "
        "with examples/upstreams.yaml on 127.0.0.1:8080.",
    )
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument(
        "--flaky", type=float, default=0.5, help="fraction of requests primary fails (default: 0.5)"
    )
    demo.set_defaults(handler=_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description="Sluice: a Kubernetes-native gateway for LLM APIs that keeps serving "
        "when providers fail.",
    )
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_demo(commands)
    _add_proxy(commands)
    _add_fake_upstream(commands)
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
    build.add_argument(
        "--node",
        action="store_true",
        help="also kubelet, kube-proxy, kube-scheduler, kube-controller-manager, CoreDNS and "
        "the pause image (for `up --node` and tests/e2e)",
    )
    build.set_defaults(handler=_controlplane_build)
    image = cp_commands.add_parser(
        "image",
        help="find or build Sluice's image (buildah, on a Debian base made with mmdebstrap) "
        "and print its reference",
        description="Builds the Dockerfile on a Debian bookworm base made here (no registry "
        "needed), once per content hash, into ~/.cache/sluice/image as a docker archive named "
        "localhost/sluice:<hash>. Needs root, buildah and mmdebstrap.",
    )
    image.add_argument(
        "--containerd",
        metavar="ADDRESS",
        default=None,
        help="also import it into the containerd at this socket (ctr images import)",
    )
    image.add_argument("--namespace", default="k8s.io", help="containerd namespace (k8s.io)")
    image.set_defaults(handler=_controlplane_image)
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
    up.add_argument(
        "--node",
        action="store_true",
        help="with a node whose pods run (root, containerd and runc): helm install works",
    )
    up.set_defaults(handler=_controlplane_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    return int(handler(args))
