"""A checkov check of this repository's own, loaded by scripts/check-manifests.sh.

checkov's probe checks (CKV_K8S_8, CKV_K8S_9) look at `containers` only, so a native sidecar
(an init container with restartPolicy: Always) could lose its probes unnoticed. This check holds
every long-running container to both probes. The demo apps that serve no port meet it with exec
probes on a heartbeat file (demo-apps/src/heartbeat.rs), so no container is exempt.
"""

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.kubernetes.checks.resource.base_spec_check import BaseK8Check

TEMPLATED = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


class LongRunningHaveProbes(BaseK8Check):
    def __init__(self) -> None:
        super().__init__(
            name="Every long-running container, native sidecars included, has liveness and readiness probes",
            id="CKV_LOGSIDECARS_1",
            categories=(CheckCategories.KUBERNETES,),
            supported_entities=TEMPLATED + ("Pod",),
        )

    def scan_spec_conf(self, conf):
        spec = conf.get("spec") or {}
        if self.entity_type != "Pod":
            spec = (spec.get("template") or {}).get("spec") or {}
        # Plain init containers run to completion and may not have these probes.
        long_running = list(spec.get("containers") or []) + [
            c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"
        ]
        for container in long_running:
            if not (container.get("livenessProbe") and container.get("readinessProbe")):
                self.details.append(f"{container.get('name')} lacks a liveness or readiness probe")
                return CheckResult.FAILED
        return CheckResult.PASSED


check = LongRunningHaveProbes()
