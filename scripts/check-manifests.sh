#!/usr/bin/env bash
# Lints manifests/: every file must parse as YAML, then checkov's Kubernetes checks and the
# repository's own (scripts/checkov/) must pass. A check the demo cannot meet is skipped by an
# annotation on the resource that gives the reason, so it is counted as skipped, not passed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Offline and quiet: no banner update check against PyPI, no download of Prisma Cloud's check
# metadata (only needed for BC_* ids), no __pycache__ left in scripts/checkov.
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true PYTHONDONTWRITEBYTECODE=1

if command -v checkov >/dev/null; then
  checkov=(checkov)
else
  echo "check-manifests: checkov is not on PATH, installing it with pip" >&2
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check checkov
  # A user install may land in a bin directory PATH lacks; the module runs either way.
  checkov=(python3 -c 'import sys; from checkov.main import Checkov; sys.exit(Checkov().run())')
fi

# checkov passes over a file that does not parse without a word, so parse them first. PyYAML
# comes with checkov: when python3 lacks it, checkov's own interpreter (its shebang) has it.
python=(python3)
if ! python3 -c 'import yaml' 2>/dev/null && script=$(command -v checkov); then
  read -r -a shebang < <(sed -n '1s/^#![[:space:]]*//p' "$(readlink -f "$script")") || true
  # A wrapper (pyenv's shim is bash) is no use: then python3's "No module named yaml" stands.
  [[ "${shebang[*]:-}" == *python* ]] && python=("${shebang[@]}")
fi
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
