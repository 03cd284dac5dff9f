#!/usr/bin/env bash
# Copies processor/rules/default.yaml into the rules ConfigMap (manifests/10-…), verbatim.
# `kubectl apply -f manifests` cannot read files beside the manifests, so the text lives in both
# places; tests/tests/manifests.rs fails when they differ.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import re
path = "manifests/10-configmap-processor-rules.yaml"
text = open(path).read()
head = text[: text.index("  rules.yaml: |\n") + len("  rules.yaml: |\n")]
rules = open("processor/rules/default.yaml").read()
body = "".join(("    " + line if line.strip() else "\n") for line in rules.splitlines(keepends=True))
open(path, "w").write(head + body)
PY
