"""A checkov check of this repository's own, loaded by scripts/check-manifests.sh.

checkov's probe checks (CKV_K8S_8, CKV_K8S_9) are skipped on the demo Deployment because three
demo apps serve no port and nothing in the image could probe them. A skip covers every container
of the Deployment, so without this check web-api or a sidecar could lose its probes unnoticed.
Native sidecars (init containers with restartPolicy: Always) are held to it too; checkov's own
checks look at `containers` only.
"""

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.kubernetes.checks.resource.base_spec_check import BaseK8Check

TEMPLATED = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


class PortsHaveProbes(BaseK8Check):
    def __init__(self) -> None:
        super().__init__(
            name="Every container that serves a port has liveness and readiness probes",
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
            if container.get("ports") and not (
                container.get("livenessProbe") and container.get("readinessProbe")
            ):
                self.details.append(f"{container.get('name')} serves a port without both probes")
                return CheckResult.FAILED
        return CheckResult.PASSED


check = PortsHaveProbes()
