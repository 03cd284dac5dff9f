#!/usr/bin/env bash
# Lints manifests/: every file must parse as YAML, then checkov's Kubernetes checks and the
# repository's own (scripts/checkov/) must pass. A check the demo cannot meet is skipped by an
# annotation on the resource that gives the reason, so it is counted as skipped, not passed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Offline and quiet: no banner update check against PyPI, no download of Prisma Cloud's check
# metadata (only needed for BC_* ids), no __pycache__ left in scripts/checkov.
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true PYTHONDONTWRITEBYTECODE=1

# checkov pins many libraries (botocore among them): in the system's Python it can break other
# tools, so it lives in a venv of its own, made once.
venv=${CHECKOV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/log-sidecars/checkov-venv}
if [[ ! -x "$venv/bin/checkov" ]]; then
  echo "check-manifests: installing checkov into $venv (once)" >&2
  log=$(mktemp -t check-manifests.XXXXXX.log)
  if ! { python3 -m venv "$venv" &&
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check checkov; } >"$log" 2>&1; then
    echo "check-manifests: installing checkov failed; pip's output is in $log" >&2
    exit 1
  fi
  rm -f "$log"
fi
checkov=("$venv/bin/checkov")
# PyYAML comes with checkov, in its venv.
python=("$venv/bin/python")

# checkov passes over a file that does not parse without a word, so parse them first.
"${python[@]}" - manifests/*.yaml <<'EOF'
import sys
import yaml

class Strict(yaml.SafeLoader):
    pass

# PyYAML keeps the last of two equal keys; kubectl refuses such a file.
def no_duplicate_keys(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)

Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, no_duplicate_keys)

failed = False
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            for doc in yaml.load_all(f, Loader=Strict):
                # kubectl skips an empty document (a trailing `---`); so does this.
                if doc is None:
                    continue
                if not (isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind")):
                    raise ValueError("a document without apiVersion and kind")
    except (yaml.YAMLError, ValueError) as e:
        print(f"check-manifests: {path}: {e}", file=sys.stderr)
        failed = True
sys.exit(1 if failed else 0)
EOF

"${checkov[@]}" -d manifests --framework kubernetes --compact --quiet --skip-download \
  --external-checks-dir scripts/checkov
