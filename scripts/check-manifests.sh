#!/usr/bin/env bash
# Lints manifests/ (the sidecar pod) and manifests/node/ (node mode): every file must parse as
# YAML, validate against the Kubernetes API's schemas with no unknown field
# (kubernetes-validate --strict), and pass checkov's Kubernetes checks and the repository's own
# (scripts/checkov/). A checkov check a manifest cannot meet is skipped by an annotation on the
# resource that gives the reason, so it is counted as skipped, not passed.
set -euo pipefail
cd "$(dirname "$0")/.."

manifests=(manifests/*.yaml manifests/node/*.yaml)
# The oldest Kubernetes the manifests support (native sidecars; docs/kubernetes.md). They are
# validated against its schemas and against the newest ones kubernetes-validate ships, so a
# field that is too new or already removed both fail.
oldest_kubernetes=1.29.0

# Offline and quiet: no banner update check against PyPI, no download of Prisma Cloud's check
# metadata (only needed for BC_* ids), no __pycache__ left in scripts/checkov.
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true PYTHONDONTWRITEBYTECODE=1

# checkov pins many libraries (botocore among them): in the system's Python it can break other
# tools, so it lives in a venv of its own, made once, with kubernetes-validate beside it. Both
# work offline afterwards: kubernetes-validate carries the API schemas of every version in its
# package. A venv made before kubernetes-validate was added gets it on the next run.
venv=${CHECKOV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/log-sidecars/checkov-venv}
missing=()
[[ -x "$venv/bin/checkov" ]] || missing+=(checkov)
[[ -x "$venv/bin/kubernetes-validate" ]] || missing+=(kubernetes-validate)
if ((${#missing[@]} > 0)); then
  echo "check-manifests: installing ${missing[*]} into $venv (once)" >&2
  log=$(mktemp -t check-manifests.XXXXXX.log)
  if ! { { [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"; } &&
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"; } >"$log" 2>&1; then
    echo "check-manifests: installing ${missing[*]} failed; pip's output is in $log" >&2
    exit 1
  fi
  rm -f "$log"
fi
checkov=("$venv/bin/checkov")
kubernetes_validate=("$venv/bin/kubernetes-validate")
# PyYAML comes with checkov, in its venv.
python=("$venv/bin/python")

# checkov passes over a file that does not parse without a word, so parse them first.
"${python[@]}" - "${manifests[@]}" <<'EOF'
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

# Every field known to the API, of the right type, required ones present: what `kubectl apply`
# would refuse (or, with its validation off, drop without a word), found with no cluster at
# hand. --quiet prints only what fails.
for version in "$oldest_kubernetes" default; do
  args=(--strict --quiet)
  [[ $version == default ]] || args+=(--kubernetes-version "$version")
  if ! "${kubernetes_validate[@]}" "${args[@]}" "${manifests[@]}"; then
    echo "check-manifests: kubernetes-validate ${args[*]} failed (above)" >&2
    exit 1
  fi
done

# -d descends into subdirectories: manifests/node/ is checked with manifests/.
"${checkov[@]}" -d manifests --framework kubernetes --compact --quiet --skip-download \
  --external-checks-dir scripts/checkov
