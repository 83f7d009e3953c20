#!/usr/bin/env python3
"""Checks the deployment files for what issue 10 asks of them.

Parses every YAML and JSON file under deploy/ and checks: the compose file's GPU reservation,
volumes, config, port, health check and stop grace; the Kubernetes Deployment's GPU request,
resource requests, native gRPC probes, grace period longer than the drain, port, ConfigMap and
volumes; the Services and the headless Service; Envoy's STRICT_DNS HTTP/2 cluster pointing at
the headless Service; the Dockerfile's bases, user, port, stop signal, health check and entry
point. Schema validation of the Kubernetes objects is done separately (kubernetes-validate).

Usage: check_manifests.py [REPO_ROOT]. Exits 1 listing every problem found.
"""
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[1])
DEPLOY = ROOT / "deploy"
PORT = 50051
DEFAULT_DRAIN_SECONDS = 30  # glassboxd --drain_seconds default

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)
    return condition


def duration_seconds(text):
    """Compose durations: 45s, 1m30s, 2m."""
    total = 0.0
    matched = False
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", str(text)):
        matched = True
        total += float(value) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total if matched else None


def load_all():
    docs = {}  # path -> list of documents
    for path in sorted(DEPLOY.rglob("*")):
        if path.suffix in (".yaml", ".yml"):
            try:
                docs[path] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            except yaml.YAMLError as error:
                problems.append(f"{path.relative_to(ROOT)}: not valid YAML: {error}")
        elif path.suffix == ".json":
            try:
                docs[path] = [json.loads(path.read_text())]
            except json.JSONDecodeError as error:
                problems.append(f"{path.relative_to(ROOT)}: not valid JSON: {error}")
    return docs


def check_glassbox_config(config, where):
    if not check(isinstance(config, dict), f"{where}: config is not a JSON object"):
        return
    models = config.get("models")
    check(isinstance(models, dict) and models and all(isinstance(v, str) for v in models.values()),
          f"{where}: \"models\" must map names to directories")
    if isinstance(models, dict):
        for name, directory in models.items():
            check(str(directory).startswith("/models/"), f"{where}: model {name} is not under /models")
    listen = config.get("listen", "")
    check(listen.startswith("0.0.0.0:") or listen.startswith("[::]:"),
          f"{where}: listen {listen!r} must bind all interfaces inside a container")
    check(listen.endswith(f":{PORT}"), f"{where}: listen {listen!r} is not port {PORT}")
    if "limits" in config:
        check(isinstance(config["limits"], dict), f"{where}: \"limits\" must be an object")


def check_compose(compose, where):
    service = (compose.get("services") or {}).get("glassboxd")
    if not check(isinstance(service, dict), f"{where}: no services.glassboxd"):
        return
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    check(any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices),
          f"{where}: no GPU reservation (deploy.resources.reservations.devices driver nvidia, capabilities [gpu])")
    # SOURCE:TARGET[:MODE], where SOURCE may be ${VAR:-default}
    targets = [re.sub(r"\$\{[^}]*\}", "VAR", str(v)).split(":")[1] for v in service.get("volumes", [])]
    check("/models" in targets, f"{where}: no volume mounted at /models")
    check("/etc/glassbox/config.json" in targets, f"{where}: the config is not mounted at /etc/glassbox/config.json")
    for volume in service.get("volumes", []):
        parts = str(volume).split(":")
        source = parts[0]
        if source.startswith("./") and "${" not in source:
            check((DEPLOY / source).exists(), f"{where}: {source} does not exist next to the compose file")
    check(any(str(p).endswith(f":{PORT}") for p in service.get("ports", [])), f"{where}: port {PORT} not published")
    check(service.get("stop_signal", "SIGTERM") == "SIGTERM", f"{where}: stop_signal must be SIGTERM")
    grace = duration_seconds(service.get("stop_grace_period", "10s"))
    check(grace is not None and grace > DEFAULT_DRAIN_SECONDS,
          f"{where}: stop_grace_period must exceed the {DEFAULT_DRAIN_SECONDS} s drain")
    check("healthcheck" in service, f"{where}: no healthcheck")


def k8s_objects(docs):
    objects = []
    for path, items in docs.items():
        if "k8s" not in path.parts:
            continue
        for item in items:
            if isinstance(item, dict) and "kind" in item and item.get("apiVersion", "").find("kustomize") < 0:
                objects.append((path, item))
    return objects


def drain_seconds(container):
    for arg in container.get("args", []) + container.get("command", []):
        match = re.fullmatch(r"--drain_seconds[= ](\d+)", str(arg))
        if match:
            return int(match.group(1))
    return DEFAULT_DRAIN_SECONDS


def check_deployment(path, deployment, configmaps):
    where = f"{path.relative_to(ROOT)}: Deployment {deployment['metadata']['name']}"
    pod = deployment["spec"]["template"]["spec"]
    containers = [c for c in pod["containers"] if c["name"] == "glassboxd"]
    if not check(len(containers) == 1, f"{where}: no glassboxd container"):
        return
    c = containers[0]
    resources = c.get("resources", {})
    check(str(resources.get("limits", {}).get("nvidia.com/gpu")) == "1", f"{where}: limits nvidia.com/gpu must be 1")
    requests = resources.get("requests", {})
    check("cpu" in requests and "memory" in requests, f"{where}: no cpu/memory requests")
    for probe in ("livenessProbe", "readinessProbe"):
        grpc = (c.get(probe) or {}).get("grpc") or {}
        check(grpc.get("port") == PORT, f"{where}: {probe} is not a native gRPC probe on port {PORT}")
    startup = (c.get("startupProbe") or {}).get("grpc") or {}
    check(not c.get("startupProbe") or startup.get("port") == PORT, f"{where}: startupProbe not gRPC on {PORT}")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    drain = drain_seconds(c)
    check(grace > drain, f"{where}: terminationGracePeriodSeconds {grace} must exceed the drain ({drain} s)")
    check(any(p.get("containerPort") == PORT for p in c.get("ports", [])), f"{where}: containerPort {PORT} missing")
    security = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
    check(security.get("runAsNonRoot") is True, f"{where}: runAsNonRoot must be true")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    check("/models" in mounts, f"{where}: nothing mounted at /models")
    config_mount = mounts.get("/etc/glassbox")
    if check(config_mount is not None, f"{where}: nothing mounted at /etc/glassbox"):
        volume = volumes.get(config_mount["name"], {})
        name = (volume.get("configMap") or {}).get("name")
        if check(name in configmaps, f"{where}: /etc/glassbox is not a ConfigMap defined in deploy/k8s"):
            data = configmaps[name].get("data", {})
            if check("config.json" in data, f"ConfigMap {name}: no config.json"):
                try:
                    check_glassbox_config(json.loads(data["config.json"]), f"ConfigMap {name} config.json")
                except json.JSONDecodeError as error:
                    problems.append(f"ConfigMap {name}: config.json is not JSON: {error}")
    for mount in mounts.values():
        check(mount["name"] in volumes, f"{where}: volumeMount {mount['name']} has no volume")
    return deployment["spec"]["template"]["metadata"]["labels"]


def check_services(objects, pod_labels):
    services = {o["metadata"]["name"]: (p, o) for p, o in objects if o["kind"] == "Service"}
    for name, (path, service) in services.items():
        where = f"{path.relative_to(ROOT)}: Service {name}"
        check(any(p.get("port") == PORT for p in service["spec"].get("ports", [])), f"{where}: port {PORT} missing")
    for name in ("glassbox", "glassbox-headless"):
        if check(name in services, f"no Service {name}"):
            selector = services[name][1]["spec"].get("selector", {})
            check(selector and all(pod_labels.get(k) == v for k, v in selector.items()),
                  f"Service {name}: selector {selector} does not match the glassbox pods")
    if "glassbox-headless" in services:
        check(services["glassbox-headless"][1]["spec"].get("clusterIP") == "None",
              "Service glassbox-headless: clusterIP must be None (headless)")
    return services


def check_envoy(envoy, where, services):
    clusters = envoy.get("static_resources", {}).get("clusters", [])
    listeners = envoy.get("static_resources", {}).get("listeners", [])
    cluster = next((c for c in clusters if c.get("name") == "glassbox"), None)
    if not check(cluster is not None, f"{where}: no cluster glassbox"):
        return
    check(cluster.get("type") == "STRICT_DNS", f"{where}: cluster type must be STRICT_DNS")
    options = (cluster.get("typed_extension_protocol_options") or {}).get(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions") or {}
    check("http2_protocol_options" in (options.get("explicit_http_config") or {}),
          f"{where}: upstream must speak HTTP/2 (explicit_http_config.http2_protocol_options)")
    addresses = [e["endpoint"]["address"]["socket_address"]
                 for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
    check(any(a["address"].split(".")[0] == "glassbox-headless" and a["port_value"] == PORT for a in addresses),
          f"{where}: cluster must resolve the headless Service glassbox-headless on port {PORT}")
    check(any("grpc_health_check" in h for h in cluster.get("health_checks", [])), f"{where}: no gRPC health check")
    hcm = [f for l in listeners for chain in l.get("filter_chains", []) for f in chain.get("filters", [])
           if f.get("name") == "envoy.filters.network.http_connection_manager"]
    if check(hcm, f"{where}: no http_connection_manager listener (HTTP-aware, per-request balancing)"):
        routes = [r for vh in hcm[0]["typed_config"]["route_config"]["virtual_hosts"] for r in vh["routes"]]
        check(all(r.get("route", {}).get("cluster") == "glassbox" for r in routes), f"{where}: routes must go to glassbox")
        check(all(duration_seconds(r.get("route", {}).get("timeout", "15s")) == 0 for r in routes),
              f"{where}: route timeout must be 0s (streaming Runs outlive Envoy's 15 s default)")
    ports = [l["address"]["socket_address"]["port_value"] for l in listeners]
    check(PORT in ports, f"{where}: no listener on {PORT}")


def check_kustomizations(docs):
    for path, items in docs.items():
        if path.name != "kustomization.yaml":
            continue
        for resource in items[0].get("resources", []):
            check((path.parent / resource).exists(), f"{path.relative_to(ROOT)}: resource {resource} does not exist")


def check_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    where = "Dockerfile"
    check(re.search(r"^ARG BASE=nvidia/cuda:13\S*runtime", text, re.M), f"{where}: ARG BASE must default to a CUDA 13 runtime image")
    check(re.search(r"^ARG BUILD_BASE=nvidia/cuda:13\S*devel", text, re.M), f"{where}: ARG BUILD_BASE must default to a CUDA 13 devel image")
    check(len(re.findall(r"^FROM ", text, re.M)) >= 2, f"{where}: not multi-stage")
    check(re.search(r"^EXPOSE\s+50051", text, re.M), f"{where}: no EXPOSE 50051")
    check(re.search(r"^STOPSIGNAL\s+SIGTERM", text, re.M), f"{where}: no STOPSIGNAL SIGTERM")
    check(re.search(r"^HEALTHCHECK\s", text, re.M), f"{where}: no HEALTHCHECK")
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    check(user and not user[-1].startswith(("root", "0")), f"{where}: the last USER must not be root")
    check(re.search(r'^ENTRYPOINT\s+\[\s*"glassboxd",\s*"--config"', text, re.M), f"{where}: ENTRYPOINT must be glassboxd --config")
    check(re.search(r"^VOLUME.*/models", text, re.M), f"{where}: /models is not a VOLUME")


def main():
    docs = load_all()
    compose = DEPLOY / "docker-compose.yml"
    if check(compose in docs, "deploy/docker-compose.yml missing"):
        check_compose(docs[compose][0], "deploy/docker-compose.yml")
    if check(DEPLOY / "config.json" in docs, "deploy/config.json missing"):
        check_glassbox_config(docs[DEPLOY / "config.json"][0], "deploy/config.json")
    objects = k8s_objects(docs)
    configmaps = {o["metadata"]["name"]: o for _, o in objects if o["kind"] == "ConfigMap"}
    deployments = [(p, o) for p, o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "glassbox"]
    pod_labels = {}
    if check(len(deployments) == 1, "deploy/k8s: exactly one Deployment glassbox expected"):
        pod_labels = check_deployment(*deployments[0], configmaps) or {}
    services = check_services(objects, pod_labels)
    envoy_path = DEPLOY / "envoy.yaml"
    if check(envoy_path in docs, "deploy/envoy.yaml missing"):
        check_envoy(docs[envoy_path][0], "deploy/envoy.yaml", services)
    envoy_deployments = [o for _, o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "glassbox-envoy"]
    if check(envoy_deployments, "deploy/k8s: no Deployment glassbox-envoy"):
        volumes = envoy_deployments[0]["spec"]["template"]["spec"].get("volumes", [])
        check(any((v.get("configMap") or {}).get("name") == "glassbox-envoy" for v in volumes),
              "Deployment glassbox-envoy: must mount the glassbox-envoy ConfigMap (deploy/envoy.yaml)")
    check_kustomizations(docs)
    check_dockerfile()
    count = sum(len(v) for v in docs.values())
    if problems:
        for problem in problems:
            print(f"check_manifests: {problem}", file=sys.stderr)
        return 1
    print(f"check_manifests: {len(docs)} files, {count} documents, {len(objects)} Kubernetes objects: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
