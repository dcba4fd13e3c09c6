"""Checks for deploy/ that no schema makes (run by deploy/validate.sh with its venv's Python).

Usage: check_config.py RENDERED_K8S_YAML...

- compose: the files, directories and Dockerfile it names exist; named volumes are declared;
  depends_on names services.
- OTel collector: every component a pipeline names is declared; extensions too.
- Prometheus: the file parses and has scrape_configs.
- Accord's own TOML: the Dockerfile's built-in config, the ConfigMap's accord.toml and agencies
  file, and deploy/dev/agencies.toml parse and use only known keys; no dev_issuer_key on
  Kubernetes.
- Kubernetes (each rendered kustomization): the config file, agencies file and server key the
  container is told to read sit under a volume that provides them; every Secret key it names
  is in secret.example.yaml; every volume it mounts is declared.
"""

import os
import re
import sys
import tomllib

import yaml

DEPLOY = os.path.dirname(os.path.abspath(__file__))
errors: list[str] = []


def fail(where: str, message: str) -> None:
    errors.append(f"{where}: {message}")


def load_yaml(path: str):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


# accord serve's configuration file (issue 6 interface).
CONFIG_KEYS = {
    "listen", "database_url", "server_key", "origin", "agencies", "dev_issuer_key", "audience",
    "dvds_target_days", "log_format", "log", "tls",
}
TLS_KEYS = {"cert", "key", "client_ca"}
# services/registry/src/lib.rs (AgenciesFile, deny_unknown_fields).
AGENCIES_KEYS = {"agencies", "issuers"}
AGENCY_KEYS = {"id", "name", "kind", "governs_policy", "keys"}
KEY_KEYS = {"id", "public_key", "revoked"}
ISSUER_KEYS = {"issuer", "algorithm", "public_key_pem", "public_key_file", "agencies"}


def unknown(where: str, table: dict, allowed: set) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        fail(where, f"unknown keys {extra}")


def check_accord_toml(where: str, text: str, kubernetes: bool) -> dict:
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(where, f"not valid TOML: {e}")
        return {}
    unknown(where, config, CONFIG_KEYS)
    if isinstance(config.get("tls"), dict):
        unknown(f"{where} [tls]", config["tls"], TLS_KEYS)
    if config.get("log_format") not in (None, "json", "text"):
        fail(where, f"log_format must be json or text, not {config['log_format']!r}")
    if kubernetes and "dev_issuer_key" in config:
        fail(where, "dev_issuer_key (development tokens) must not be set on Kubernetes")
    if kubernetes and "database_url" in config:
        fail(where, "database_url belongs in the Secret (ACCORD_DATABASE_URL), not the ConfigMap")
    return config


def check_agencies_toml(where: str, text: str) -> None:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(where, f"not valid TOML: {e}")
        return
    unknown(where, doc, AGENCIES_KEYS)
    for i, a in enumerate(doc.get("agencies", [])):
        unknown(f"{where} agencies[{i}]", a, AGENCY_KEYS)
        for j, k in enumerate(a.get("keys", [])):
            unknown(f"{where} agencies[{i}].keys[{j}]", k, KEY_KEYS)
    for i, s in enumerate(doc.get("issuers", [])):
        unknown(f"{where} issuers[{i}]", s, ISSUER_KEYS)


def check_dockerfile() -> None:
    where = "deploy/Dockerfile"
    with open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^COPY <<EOF /etc/accord/accord\.toml\n(.*?)^EOF$", text, re.S | re.M)
    if not m:
        fail(where, "no built-in /etc/accord/accord.toml")
        return
    check_accord_toml(f"{where} (built-in accord.toml)", m.group(1), kubernetes=False)
    for needed in ('ENTRYPOINT ["accord"]', 'CMD ["serve"]', "EXPOSE 50051", "USER 10001"):
        if needed not in text:
            fail(where, f"missing {needed}")


def check_compose() -> None:
    where = "deploy/compose/compose.yaml"
    base = os.path.join(DEPLOY, "compose")
    doc = load_yaml(os.path.join(base, "compose.yaml"))
    services = doc.get("services", {})
    volumes = set((doc.get("volumes") or {}).keys())
    for name, svc in services.items():
        build = svc.get("build")
        if isinstance(build, dict):
            context = os.path.normpath(os.path.join(base, build.get("context", ".")))
            dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
            if not os.path.isdir(context):
                fail(where, f"{name}: build context {context} does not exist")
            if not os.path.isfile(dockerfile):
                fail(where, f"{name}: Dockerfile {dockerfile} does not exist")
        for v in svc.get("volumes", []):
            source = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if source.startswith((".", "/")):
                if not os.path.exists(os.path.normpath(os.path.join(base, source))):
                    fail(where, f"{name}: bind-mounted {source} does not exist")
            elif source and source not in volumes:
                fail(where, f"{name}: volume {source} is not declared under volumes:")
        depends = svc.get("depends_on", {})
        for d in depends if isinstance(depends, (list, dict)) else []:
            if d not in services:
                fail(where, f"{name}: depends_on names unknown service {d}")
    if "dev" not in str(services.get("accord", {}).get("environment", {}).get("ACCORD_AGENCIES", "")):
        fail(where, "accord: ACCORD_AGENCIES should point at the mounted deploy/dev/agencies.toml")


def check_otel() -> None:
    where = "deploy/compose/otel-collector.yaml"
    doc = load_yaml(os.path.join(DEPLOY, "compose", "otel-collector.yaml"))
    service = doc.get("service") or {}
    for ext in service.get("extensions", []):
        if ext not in (doc.get("extensions") or {}):
            fail(where, f"service.extensions names undeclared extension {ext}")
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        fail(where, "no pipelines")
    for pname, pipeline in pipelines.items():
        if pname.split("/")[0] not in ("traces", "metrics", "logs", "profiles"):
            fail(where, f"pipeline {pname}: not a signal type")
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                if component not in (doc.get(kind) or {}):
                    fail(where, f"pipeline {pname}: {kind[:-1]} {component} is not declared")
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            fail(where, f"pipeline {pname}: needs receivers and exporters")


def check_prometheus() -> None:
    doc = load_yaml(os.path.join(DEPLOY, "compose", "prometheus.yaml"))
    if not (doc or {}).get("scrape_configs"):
        fail("deploy/compose/prometheus.yaml", "no scrape_configs")


def under(path: str, mount: str) -> str | None:
    """The file name of `path` inside `mount`, or None."""
    mount = mount.rstrip("/") + "/"
    return path[len(mount):] if path.startswith(mount) else None


def check_kubernetes(rendered: str, secret_keys: dict[str, set]) -> None:
    # validate.sh names the rendered files after their kustomization: deploy_k8s_tls.yaml.
    where = os.path.basename(rendered).removesuffix(".yaml").replace("_", "/") + " (rendered)"
    with open(rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if not deployments:
        fail(where, "no Deployment")
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            cwhere = f"{where} {dep['metadata']['name']}/{c['name']}"
            mounts = []
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    fail(cwhere, f"mounts undeclared volume {m['name']}")
                    continue
                mounts.append((m["mountPath"], volumes[m["name"]]))

            def provided(path: str) -> bool:
                for mount_path, vol in mounts:
                    name = under(path, mount_path)
                    if name is None:
                        continue
                    if "configMap" in vol:
                        return name in configmaps.get(vol["configMap"]["name"], {})
                    if "secret" in vol:
                        return name in secret_keys.get(vol["secret"]["secretName"], set())
                    return True
                return False

            env = {e["name"]: e for e in c.get("env", [])}
            for e in env.values():
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["key"] not in secret_keys.get(ref["name"], set()):
                    fail(cwhere, f"env {e['name']}: Secret {ref['name']} has no key {ref['key']} in secret.example.yaml")
            for name, e in env.items():
                if name.startswith("ACCORD_TLS_") and "value" in e and not provided(e["value"]):
                    fail(cwhere, f"{name}={e['value']} is not provided by any mounted volume")
            config_path = env.get("ACCORD_CONFIG", {}).get("value")
            if not config_path or not provided(config_path):
                fail(cwhere, f"ACCORD_CONFIG={config_path} is not provided by a mounted ConfigMap")
                continue
            for mount_path, vol in mounts:
                name = under(config_path, mount_path)
                if name is None or "configMap" not in vol:
                    continue
                data = configmaps[vol["configMap"]["name"]]
                config = check_accord_toml(f"{where} ConfigMap {vol['configMap']['name']}/{name}", data[name], True)
                for key in ("server_key", "agencies"):
                    if key in config and not provided(config[key]):
                        fail(cwhere, f"accord.toml {key}={config[key]} is not provided by any mounted volume")
                agencies = config.get("agencies")
                if agencies:
                    for mp, v in mounts:
                        n = under(agencies, mp)
                        if n is not None and "configMap" in v:
                            check_agencies_toml(f"{where} ConfigMap {v['configMap']['name']}/{n}", configmaps[v["configMap"]["name"]][n])


def main() -> int:
    secret_keys: dict[str, set] = {}
    with open(os.path.join(DEPLOY, "k8s", "secret.example.yaml"), encoding="utf-8") as f:
        for d in yaml.safe_load_all(f):
            if d and d.get("kind") == "Secret":
                secret_keys[d["metadata"]["name"]] = set(d.get("stringData", {})) | set(d.get("data", {}))
    check_dockerfile()
    check_compose()
    check_otel()
    check_prometheus()
    with open(os.path.join(DEPLOY, "dev", "agencies.toml"), encoding="utf-8") as f:
        check_agencies_toml("deploy/dev/agencies.toml", f.read())
    for rendered in sys.argv[1:]:
        check_kubernetes(rendered, secret_keys)
    for e in errors:
        print(f"ERROR {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
