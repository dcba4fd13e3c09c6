#!/usr/bin/env bash
# Validates deploy/ without a cluster or a container engine:
#   (a) the Kubernetes manifests, rendered by `kubectl kustomize` (deploy/k8s and deploy/k8s/tls),
#       and secret.example.yaml, against the Kubernetes JSON schemas, strictly (unknown fields
#       are errors), for each version in ACCORD_K8S_VERSIONS — kubernetes-validate, whose
#       schemas ship inside the package;
#   (b) deploy/compose/compose.yaml against the Compose specification schema — check-jsonschema
#       with its vendored schema (--builtin-schema vendor.compose-spec);
#   (c) the OTel collector and Prometheus configs as YAML, and the cross-references no schema
#       sees (deploy/check_config.py: pipelines name declared components, mounted files exist,
#       Accord's TOML uses known keys, the Deployment's files come from its volumes).
# The tools are installed from PyPI, pinned (deploy/validate-requirements.txt), into a venv at
# ${ACCORD_VENV:-.venv-ci}; after that the script needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${ACCORD_VENV:-.venv-ci}"
K8S_VERSIONS="${ACCORD_K8S_VERSIONS:-1.32.0 1.37.0}"
KUBECTL="${KUBECTL:-kubectl}"
REQUIREMENTS=deploy/validate-requirements.txt

if [ ! -x "$VENV/bin/kubernetes-validate" ] || ! cmp -s "$REQUIREMENTS" "$VENV/.accord-requirements"; then
  echo "deploy: installing validators into $VENV"
  python3 -m venv "$VENV"
  printf '*\n' >"$VENV/.gitignore" # keep the venv out of git status
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$VENV/.accord-requirements"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# (a) Kubernetes.
rendered=()
if command -v "$KUBECTL" >/dev/null 2>&1; then
  for root in deploy/k8s deploy/k8s/tls; do
    out="$work/$(echo "$root" | tr / _).yaml"
    "$KUBECTL" kustomize "$root" >"$out"
    rendered+=("$out")
  done
else
  # Without kubectl the overlay cannot be rendered: check the base manifests as written.
  echo "deploy: kubectl not found; validating deploy/k8s/base/*.yaml unrendered (deploy/k8s/tls not checked)" >&2
  out="$work/deploy_k8s_base.yaml"
  for f in deploy/k8s/base/*.yaml; do
    case "$f" in */kustomization.yaml) continue ;; esac
    cat "$f"
    printf '\n---\n'
  done >"$out"
  rendered+=("$out")
fi
for version in $K8S_VERSIONS; do
  log="$work/k8s-$version.log"
  status=0
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${rendered[@]}" deploy/k8s/secret.example.yaml >"$log" 2>&1 || status=$?
  # A kind without a schema is only a warning to kubernetes-validate: here it is an error.
  if [ "$status" -ne 0 ] || grep -q . "$log"; then
    sed -E "s#$work/(deploy_k8s[a-z_]*)\.yaml#\1 (rendered)#g; s#deploy_k8s_tls #deploy/k8s/tls #g; s#deploy_k8s_base #deploy/k8s/base #g; s#deploy_k8s #deploy/k8s #g" "$log" >&2
    echo "deploy: Kubernetes manifests FAILED against $version" >&2
    exit 1
  fi
done
echo "deploy: Kubernetes manifests valid against ${K8S_VERSIONS// /, } (strict)"

# (b) Compose.
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml \
  || { echo "deploy: compose.yaml FAILED the Compose specification schema" >&2; exit 1; }
echo "deploy: compose.yaml valid against the Compose specification"

# (c) YAML and cross-references.
"$VENV/bin/python" deploy/check_config.py "${rendered[@]}" \
  || { echo "deploy: configuration cross-checks FAILED" >&2; exit 1; }
echo "deploy: OTel collector, Prometheus, Dockerfile and Accord TOML checks passed"
