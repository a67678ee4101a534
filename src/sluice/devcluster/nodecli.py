"""``sluice controlplane up --node``: the one-node cluster for a person, in the foreground."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from sluice.devcluster.assets import AssetsError, ensure_binaries, ensure_tools
from sluice.devcluster.cluster import ControlPlaneError
from sluice.devcluster.node import NodeCluster
from sluice.devcluster.nodeassets import ensure_node_binaries
from sluice.devcluster.nodehost import NodeError

CHART = Path(__file__).resolve().parents[3] / "charts" / "sluice"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def how_to_use(kubeconfig: Path, helm: Path, kubectl: Path, image: str | None) -> str:
    """What a person types next: helm install with the image loaded here, then reach the
    proxy through a port-forward to its Service."""
    repository, _, tag = (image or "localhost/sluice:TAG").rpartition(":")
    lines = [
        "Use it from another shell with:",
        f"  export KUBECONFIG={kubeconfig}",
        f"  {helm} install sluice {CHART} --set image.repository={repository} \\",
        f"      --set image.tag={tag} --set image.pullPolicy=Never --wait",
        f"  {kubectl} get pods",
        f"  {kubectl} port-forward svc/sluice-proxy 8080:80   # then http://127.0.0.1:8080/v1",
    ]
    if image is None:
        lines.insert(1, "  (Sluice's image was not loaded: run `sluice controlplane image` as root")
        lines.insert(2, "   with buildah and mmdebstrap, then start this again)")
    return "\n".join(lines)


def _load_image(node: object) -> str | None:
    """Build (or find) Sluice's image and import it into the node; None if it cannot be."""
    try:
        # Lazily: the image's tooling (buildah, mmdebstrap) is optional for a node.
        from sluice.devcluster.image import ImageError, ensure_image  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the image module is optional tooling
        return None
    try:
        image = ensure_image(log=_log)
        node.import_image(image.archive)  # type: ignore[attr-defined]
    except (ImageError, NodeError) as e:
        _log(f"sluice: the image is not loaded: {e}")
        return None
    return str(image.reference)


def up_with_node(directory: Path | None) -> int:
    """Start the cluster with its node, load the image, print how to install; Ctrl-C stops."""
    try:
        control, node_binaries, tools = (
            ensure_binaries(_log),
            ensure_node_binaries(_log),
            ensure_tools(_log),
        )
        # Ctrl-C while it starts is a KeyboardInterrupt: start() stops what it began.
        node = NodeCluster.start(control, node_binaries, state=directory, log=_log)
    except (AssetsError, ControlPlaneError, NodeError) as e:
        _log(f"sluice: {e}")
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with node:
        image = _load_image(node)
        print(f"one-node cluster up; state in {node.state}")
        print(how_to_use(node.kubeconfig, tools.helm, tools.kubectl, image))
        print("Ctrl-C stops it (pods, containers, mounts, the bridge and iptables rules go).")
        sys.stdout.flush()
        while not stop.wait(0.5):
            if not node.running:
                _log("sluice: a cluster process exited; stopping")
                return 1
        _log("stopping ...")
    return 0
