"""The operator: probes every Upstream, runs its cluster breaker, writes status and Events.

Thin glue: the breaker is ``sluice.core``, the schemas are ``sluice.resources``, the API calls
are ``sluice.kube``; kopf watches the resources; a Lease picks the one replica that works.
"""

from sluice.operator.app import Operator, OperatorOptions, run

__all__ = ["Operator", "OperatorOptions", "run"]
