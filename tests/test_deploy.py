"""The Kubernetes overlays, the alert rules and the Grafana dashboard, checked offline.

The overlays are rendered with ``kubectl kustomize`` (the same kustomize an operator runs);
the rules go through ``promtool check rules`` and ``promtool test rules`` (Debian's
``prometheus`` package, downloaded and unpacked, never installed: installing it starts a
server). Neither tool is optional: a missing one fails the test with how to get it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest
import yaml

from worker.settings import SIMULATOR_DEV_TOKEN, SecretStr, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("production", "staging")
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "callpass-dashboard.json"
TOOLS = Path.home() / ".cache" / "callpass-test-tools"

WORKER_COMMAND = [
    "celery",
    "-A",
    "worker.celery_app",
    "worker",
    "--loglevel",
    "INFO",
    "--hostname",
    "worker@$(POD_NAME)",
]
FLOWER_COMMAND = ["callpass", "flower", "--address=0.0.0.0", "--port=5555"]
SIMULATOR_COMMAND = ["callpass", "simulator", "--host", "0.0.0.0", "--port", "8099"]

#: What the worker exports (worker/ops/metrics.py); histograms also as _bucket, _sum, _count.
HISTOGRAMS = frozenset(
    {"callpass_api_request_duration_seconds", "callpass_status_requests_per_call"}
)
EXPORTED = HISTOGRAMS | {
    "callpass_calls_total",
    "callpass_api_requests_total",
    "callpass_calls_in_flight",
    "callpass_webhook_deliveries_total",
    "callpass_webhook_dead_letters",
    "callpass_limit_refusals_total",
    "callpass_broker_queue_length",
    "callpass_polls_scheduled",
    "callpass_polls_due",
    "callpass_code_checks_total",
    "callpass_verifications_started_total",
    "callpass_verifications_converted_total",
    "callpass_fallbacks_total",
    "callpass_test_calls_total",
}
#: Names an expression may use: the series above, and Prometheus' own ``up``.
QUERYABLE = (
    (EXPORTED - HISTOGRAMS)
    | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
    | {"up"}
)
ALERT_NAMES = {
    "CallPassApiErrorRate",
    "CallPassBacklog",
    "CallPassDeadLettersGrowing",
    "CallPassNoWorkers",
    "CallPassConversionDrop",
}

#: Settings whose values are secrets (SecretStr fields): never in a ConfigMap or a literal.
SECRET_SETTINGS = frozenset(
    "CALLPASS_" + name.upper()
    for name, field in Settings.model_fields.items()
    if field.annotation is SecretStr
)

Doc = dict[str, Any]


# --- tools -----------------------------------------------------------------------------------


def _run(
    *argv: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )


def _apt_get(*args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    out = subprocess.run(
        ["apt-get", "-qq", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    return out.returncode == 0


def _missing_tool(message: str) -> NoReturn:
    """Fail where the tools are required (CI: .ci/run sets CALLPASS_TEST_REQUIRE_DEPLOY_TOOLS=1),
    skip elsewhere: Debian's own packages hold no kubectl recent enough, and a fresh machine's
    ``make test`` must not fail for want of one."""
    if os.environ.get("CALLPASS_TEST_REQUIRE_DEPLOY_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def kubectl() -> str:
    found = shutil.which("kubectl")
    # apt-get finds kubectl where the Kubernetes apt repository is configured (Debian's
    # kubernetes-client bundles a kustomize too old for these overlays).
    can_apt = os.geteuid() == 0 and shutil.which("apt-get")
    if found is None and can_apt and _apt_get("install", "-y", "kubectl"):
        found = shutil.which("kubectl")
    if found is None:
        _missing_tool(
            "kubectl is missing and could not be installed: install kubectl v1.27+ (it bundles "
            "kustomize v5), e.g. `apt-get install -y kubectl` from the Kubernetes apt repository "
            "or Debian's `kubernetes-client` where it is that recent, then run this test again"
        )
    # The overlays use `labels:` and `patches:`, which kustomize before v5 does not know.
    version = _run(found, "version", "--client").stdout
    bundled = re.search(r"Kustomize Version: v(\d+)", version)
    if bundled is None or int(bundled.group(1)) < 5:
        _missing_tool(
            f"{found} bundles no kustomize v5 ({version.strip()!r}): install kubectl v1.27+ "
            "from the Kubernetes apt repository (Debian's kubernetes-client is too old)"
        )
    return found


def _extract_promtool(target: Path) -> str | None:
    """Unpack promtool from Debian's prometheus package into ``target``; why not, or None."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return "apt-get and dpkg-deb, which fetch it, are missing"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        download = _run("apt-get", "download", "-qq", "prometheus", cwd=work, timeout=300)
        if download.returncode != 0 and os.geteuid() == 0:
            _apt_get("update")  # a fresh image has no package lists yet
            download = _run("apt-get", "download", "-qq", "prometheus", cwd=work, timeout=300)
        debs = sorted(work.glob("prometheus_*.deb"))
        if download.returncode != 0 or not debs:
            return f"`apt-get download prometheus` failed: {download.stderr.strip()[-400:]}"
        unpack = _run("dpkg-deb", "-x", str(debs[0]), str(work / "root"), timeout=120)
        binary = work / "root" / "usr" / "bin" / "promtool"
        if unpack.returncode != 0 or not binary.is_file():
            return f"`dpkg-deb -x` gave no usr/bin/promtool: {unpack.stderr.strip()[-400:]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}")
        shutil.copy2(binary, partial)
        partial.replace(target)  # atomic: a concurrent run sees the whole file or none
    return None


@pytest.fixture(scope="module")
def promtool() -> str:
    cached = TOOLS / "promtool"
    if not cached.is_file():
        problem = _extract_promtool(cached)
        if problem is not None:
            pytest.fail(
                f"promtool is needed to check deploy/prometheus/alerts.yml and {problem}. "
                "On Debian: `apt-get update && cd /tmp && apt-get download prometheus && "
                f"dpkg-deb -x prometheus_*.deb x && cp x/usr/bin/promtool {cached}` "
                "(do not apt-get install prometheus: that starts a server)"
            )
    return str(cached)


# --- rendering -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[Doc]]:
    out: dict[str, list[Doc]] = {}
    for overlay in OVERLAYS:
        result = _run(kubectl, "kustomize", str(K8S / "overlays" / overlay))
        assert result.returncode == 0, f"{overlay}: {result.stderr}"
        # Deprecated fields (commonLabels, patchesStrategicMerge ...) only warn: refuse them.
        assert result.stderr.strip() == "", f"{overlay} renders with warnings: {result.stderr}"
        out[overlay] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return out


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest, rendered: dict[str, list[Doc]]) -> list[Doc]:
    return rendered[request.param]


def _all(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in _all(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _names(docs: list[Doc], kind: str) -> set[str]:
    return {d["metadata"]["name"] for d in _all(docs, kind)}


def _pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        for d in _all(docs, kind):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def _containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _worker(docs: list[Doc]) -> tuple[Doc, Doc]:
    """The worker Deployment and its container."""
    deployment = _one(docs, "Deployment", "callpass-worker")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def _config(docs: list[Doc]) -> dict[str, str]:
    return dict(_one(docs, "ConfigMap", "callpass-config")["data"])


def _settings_env(docs: list[Doc]) -> dict[str, str]:
    """The CALLPASS_* variables a worker gets from what the overlay ships."""
    env = {k: v for k, v in _config(docs).items() if k.startswith("CALLPASS_")}
    for secret in _all(docs, "Secret"):
        env.update(secret.get("stringData", {}))
    return env


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- the manifests ---------------------------------------------------------------------------


def test_the_configmap_holds_valid_settings(docs: list[Doc]) -> None:
    config = _config(docs)
    settings = load_settings(_settings_env(docs))  # raises SettingsError naming the variable
    assert config["CALLPASS_QUEUE"] == settings.queue == "callpass"
    assert config["CALLPASS_LOG_FORMAT"] == "json"
    assert settings.metrics_port == 9818
    assert settings.metrics_address == "0.0.0.0"
    assert settings.heartbeat_file == "/run/callpass/heartbeat"
    assert settings.soft_shutdown_s == 10
    assert config["CALLPASS_REDIS_URL"] and config["CALLPASS_API_URL"]


def test_the_grace_period_outlasts_soft_shutdown_and_the_longest_task(docs: list[Doc]) -> None:
    deployment, _ = _worker(docs)
    settings = load_settings(_settings_env(docs))
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    needed = settings.soft_shutdown_s + settings.max_start_s
    assert grace > needed, f"terminationGracePeriodSeconds {grace} <= {needed:g} s"


def test_the_worker_runs_celery_with_the_pod_name_and_both_env_sources(docs: list[Doc]) -> None:
    _, container = _worker(docs)
    assert container["command"] == WORKER_COMMAND
    pod_name = {e["name"]: e for e in container["env"]}["POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    sources = [next(iter(s.items())) for s in container["envFrom"]]
    assert sources == [
        ("configMapRef", {"name": "callpass-config"}),
        ("secretRef", {"name": "callpass-api"}),
    ]
    image, _, tag = container["image"].rpartition(":")
    assert image.endswith("callpass-worker") and tag and tag != "latest", container["image"]


def test_every_container_is_limited_and_locked_down(docs: list[Doc]) -> None:
    for name, pod in _pod_specs(docs):
        pod_security = pod["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["runAsUser"] == 10001, name  # the Dockerfile's user
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault", name
        # Service links would inject CALLPASS_<SERVICE>_PORT ... for the callpass-* Services,
        # and the worker refuses unknown CALLPASS_* variables.
        assert pod["enableServiceLinks"] is False, name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in _containers(pod):
            where = f"{name}/{container['name']}"
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, where
            security = {**pod_security, **container["securityContext"]}
            assert security["runAsNonRoot"] is True, where
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert security["seccompProfile"]["type"] == "RuntimeDefault", where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in volumes, f"{where}: /tmp must be a writable volume"


def test_the_heartbeat_file_is_on_a_writable_volume(docs: list[Doc]) -> None:
    deployment, container = _worker(docs)
    heartbeat = Path(_config(docs)["CALLPASS_HEARTBEAT_FILE"])
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {Path(m["mountPath"]): m for m in container["volumeMounts"]}
    mount = mounts[heartbeat.parent]
    assert "emptyDir" in volumes[mount["name"]] and not mount.get("readOnly", False)


def test_liveness_comes_from_the_heartbeat_not_a_broker_ping(docs: list[Doc]) -> None:
    _, container = _worker(docs)
    for probe in ("livenessProbe", "startupProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["callpass", "healthcheck"], command
        max_age = float(command[command.index("--max-age-s") + 1])
        # Celery sends a heartbeat every 2 s: a minute without one is a stuck worker.
        assert 10 <= max_age <= 300
    text = yaml.safe_dump_all(docs)
    assert "inspect ping" not in text
    for _, pod in _pod_specs(docs):
        for c in _containers(pod):
            for part in (
                c.get("command", []),
                *(
                    c.get(p, {}).get("exec", {}).get("command", [])
                    for p in ("livenessProbe", "readinessProbe", "startupProbe")
                ),
            ):
                assert not {"inspect", "ping"} <= set(part), part


def test_readiness_is_its_own_probe_and_runs_the_readycheck(docs: list[Doc]) -> None:
    """Not ready (Redis or the broker away) holds a rollout back without restarting the pod."""
    _, container = _worker(docs)
    command = container["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["callpass", "readycheck"], command
    # Redis, the broker and the result backend, each connect and each reply up to 2 s.
    assert container["readinessProbe"]["timeoutSeconds"] >= 3 * 2 * 2
    assert container["livenessProbe"]["exec"]["command"] != command


def test_the_worker_exposes_metrics_to_prometheus(docs: list[Doc]) -> None:
    deployment, container = _worker(docs)
    port = int(_config(docs)["CALLPASS_METRICS_PORT"])
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    service = _one(docs, "Service", "callpass-worker-metrics")
    assert service["spec"]["ports"][0]["port"] == port
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _labels_match(service["spec"]["selector"], labels)


def test_every_selector_matches_its_pods(docs: list[Doc]) -> None:
    templates = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in _all(docs, "Deployment")
    }
    for deployment in _all(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert _labels_match(selector, templates[name]), name
        # ... and no other Deployment's pods (a shared selector would mix their pods).
        others = [
            o for o, labels in templates.items() if o != name and _labels_match(selector, labels)
        ]
        assert not others, f"{name}'s selector also matches {others}"
    for service in _all(docs, "Service"):
        selected = [
            n
            for n, labels in templates.items()
            if _labels_match(service["spec"]["selector"], labels)
        ]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {selected}"


def test_the_disruption_budget_covers_the_workers_only(docs: list[Doc]) -> None:
    (pdb,) = _all(docs, "PodDisruptionBudget")
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    for deployment in _all(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        is_worker = deployment["metadata"]["name"] == "callpass-worker"
        assert _labels_match(selector, labels) == is_worker, deployment["metadata"]["name"]


def test_keda_scales_the_workers_on_the_queue_and_on_calls_in_flight(docs: list[Doc]) -> None:
    (scaled,) = _all(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == ("Deployment", "callpass-worker")
    assert scaled["spec"]["minReplicaCount"] >= 2
    assert scaled["spec"]["maxReplicaCount"] > scaled["spec"]["minReplicaCount"]
    triggers = {t["type"]: t["metadata"] for t in scaled["spec"]["triggers"]}
    assert set(triggers) == {"redis", "prometheus"}
    assert "callpass_calls_in_flight" in triggers["prometheus"]["query"]
    assert float(triggers["prometheus"]["threshold"]) > 0

    # The redis trigger reads the queue the workers consume, on the Redis they use.
    config = _config(docs)
    redis = triggers["redis"]
    assert redis["listName"] == config["CALLPASS_QUEUE"]
    assert int(redis["listLength"]) > 0
    url = urlsplit(config["CALLPASS_REDIS_URL"])
    address = redis.get("address") or config[redis["addressFromEnv"]]
    assert address == f"{url.hostname}:{url.port or 6379}"
    assert redis.get("databaseIndex", "0") == (url.path.strip("/") or "0")
    assert redis.get("enableTLS", "false") == str(url.scheme == "rediss").lower()

    # A Deployment replica count (production) only starts what KEDA then owns: the same.
    deployment, _ = _worker(docs)
    if "replicas" in deployment["spec"]:
        assert deployment["spec"]["replicas"] == scaled["spec"]["minReplicaCount"]


def test_flower_takes_its_login_from_a_secret_and_stays_inside_the_cluster(
    docs: list[Doc],
) -> None:
    flower = _one(docs, "Deployment", "callpass-flower")
    (container,) = flower["spec"]["template"]["spec"]["containers"]
    assert container["command"] == FLOWER_COMMAND
    env = {e["name"]: e for e in container["env"]}
    ref = env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "callpass-flower-auth", "key": "FLOWER_BASIC_AUTH"}
    for service in _all(docs, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]
    assert not _all(docs, "Ingress")  # an ingress must authenticate itself: not shipped here
    # Flower's /metrics is open even with basic auth: only listed peers may connect.
    labels = flower["spec"]["template"]["metadata"]["labels"]
    policies = [
        p
        for p in _all(docs, "NetworkPolicy")
        if _labels_match(p["spec"]["podSelector"]["matchLabels"], labels)
    ]
    assert policies, "no NetworkPolicy selects the Flower pods"
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), "an ingress rule without `from` lets everyone in"


def test_secrets_come_only_from_secrets(docs: list[Doc]) -> None:
    assert "CALLPASS_API_TOKEN" in SECRET_SETTINGS
    for config_map in _all(docs, "ConfigMap"):
        leaked = SECRET_SETTINGS & set(config_map.get("data", {}))
        assert not leaked, f"{config_map['metadata']['name']} holds {leaked}"
    for name, pod in _pod_specs(docs):
        for container in _containers(pod):
            for variable in container.get("env", []):
                if variable["name"] in SECRET_SETTINGS or variable["name"] == "FLOWER_BASIC_AUTH":
                    assert "secretKeyRef" in variable.get("valueFrom", {}), f"{name}: {variable}"


def test_production_ships_no_simulator_and_no_placeholder_secrets(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["production"]
    assert not any("simulator" in d["metadata"]["name"] for d in docs)
    assert "simulator" not in json.dumps(_config(docs))
    # The real Secrets are created out of band; an apply must never overwrite them.
    assert not _all(docs, "Secret")
    settings = load_settings(_settings_env(docs))
    assert urlsplit(settings.api_url).scheme == "https" and not settings.insecure_allow_http
    assert not settings.insecure_skip_tls_verify


def test_staging_runs_against_the_simulator(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["staging"]
    simulator = _one(docs, "Deployment", "callpass-simulator")
    (container,) = simulator["spec"]["template"]["spec"]["containers"]
    assert container["command"] == SIMULATOR_COMMAND
    _, worker = _worker(docs)
    assert container["image"] == worker["image"]
    service = _one(docs, "Service", "callpass-simulator")
    assert service["spec"]["ports"][0]["port"] == 8099
    config = _config(docs)
    assert config["CALLPASS_API_URL"] == "http://callpass-simulator:8099/"
    assert config["CALLPASS_INSECURE_ALLOW_HTTP"] == "true"
    token = _one(docs, "Secret", "callpass-api")["stringData"]["CALLPASS_API_TOKEN"]
    assert token == SIMULATOR_DEV_TOKEN
    assert load_settings(_settings_env(docs)).uses_simulator_token


def test_overlays_use_their_own_namespace(rendered: dict[str, list[Doc]]) -> None:
    namespaces = {
        overlay: {d["metadata"].get("namespace") for d in docs}
        for overlay, docs in rendered.items()
    }
    assert namespaces["production"] != namespaces["staging"]
    for overlay, found in namespaces.items():
        assert len(found) == 1 and None not in found, f"{overlay}: {found}"


# --- alert rules and dashboard ---------------------------------------------------------------

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (functions, labels and keywords left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    s = re.sub(r"\{[^}]*\}", " ", s)  # matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges, Grafana's $__rate_interval inside
    s = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s, flags=re.I
    )
    names = set()
    for match in re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?", s):
        name, call = match.groups()
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def test_metric_names_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, method) (rate(a_bucket{method="x"}[5m])))'
        ' / ignoring(x) b offset 5m > 1e3 or absent(up{job="j"}) and c_total[$__rate_interval]'
    )
    assert metric_names(expr) == {"a_bucket", "b", "up", "c_total"}


def test_the_exported_names_are_the_workers_own() -> None:
    from worker.ops.metrics import EXPORTED as WORKER_EXPORTS

    assert set(WORKER_EXPORTS) == EXPORTED


@pytest.fixture(scope="module")
def alerts() -> Doc:
    return dict(yaml.safe_load(ALERTS.read_text()))


def _rules(alerts: Doc) -> list[Doc]:
    (group,) = alerts["groups"]
    assert group["name"] == "callpass"
    return list(group["rules"])


def test_the_alert_rules_pass_promtool(promtool: str) -> None:
    out = _run(promtool, "check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in out.stdout


def test_every_alert_says_how_bad_it_is_and_what_to_do(alerts: Doc) -> None:
    rules = _rules(alerts)
    assert {r["alert"] for r in rules} == ALERT_NAMES
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "warning", "info"}, rule["alert"]
        assert rule.get("for"), rule["alert"]
        for annotation in ("summary", "description", "runbook"):
            assert len(rule["annotations"][annotation].strip()) > 10, (rule["alert"], annotation)


def test_alerts_and_dashboard_use_only_exported_metrics(alerts: Doc) -> None:
    exprs = [r["expr"] for r in _rules(alerts)]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for expr in exprs:
        unknown = metric_names(expr) - QUERYABLE
        assert not unknown, f"{unknown} in {expr!r}"
    # Prose (runbooks, descriptions) names metrics too: those must exist as well.
    prose = re.findall(r"\bcallpass_\w+", ALERTS.read_text() + DASHBOARD.read_text())
    assert set(prose) <= QUERYABLE | EXPORTED
    # ... and every exported metric is on the dashboard.
    on_dashboard = set().union(*(metric_names(e) for e in exprs[len(_rules(alerts)) :]))
    for metric in EXPORTED:
        variants = {metric} | {metric + s for s in ("_bucket", "_sum", "_count")}
        assert variants & on_dashboard, f"{metric} is not on the dashboard"


def _promtool_test(rule: Doc, series: dict[str, str], at: str, fires: dict[str, str] | None) -> Doc:
    expected = []
    if fires is not None:
        expected.append(
            {
                "exp_labels": {**rule["labels"], **fires},
                "exp_annotations": rule["annotations"],
            }
        )
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [{"eval_time": at, "alertname": rule["alert"], "exp_alerts": expected}],
    }


def test_the_alerts_fire_when_they_should(promtool: str, alerts: Doc, tmp_path: Path) -> None:
    """promtool's rule unit tests: each alert on a made-up history, and a quiet one."""
    rules = {r["alert"]: r for r in _rules(alerts)}
    requests = 'callpass_api_requests_total{method="status",status="%s"}'
    cases = [
        # No worker scraped at all, or every one down.
        ("CallPassNoWorkers", {'up{job="other"}': "1x20"}, "10m", {"job": "callpass-worker"}),
        ("CallPassNoWorkers", {'up{job="callpass-worker",instance="a"}': "0x20"}, "10m", {}),
        ("CallPassNoWorkers", {'up{job="callpass-worker",instance="a"}': "1x20"}, "10m", None),
        # 10% of requests unanswered or 5xx; 429s are the API pacing us, not errors.
        (
            "CallPassApiErrorRate",
            {requests % "200": "0+90x40", requests % "error": "0+5x40", requests % "503": "0+5x40"},
            "25m",
            {},
        ),
        (
            "CallPassApiErrorRate",
            {requests % "200": "0+90x40", requests % "429": "0+10x40"},
            "25m",
            None,
        ),
        (
            "CallPassBacklog",
            {'callpass_broker_queue_length{queue="callpass"}': "1500x30"},
            "15m",
            {},
        ),
        (
            "CallPassBacklog",
            {'callpass_broker_queue_length{queue="callpass"}': "10x30"},
            "15m",
            None,
        ),
        ("CallPassBacklog", {"callpass_calls_in_flight": "2000+20x30"}, "20m", {}),
        ("CallPassDeadLettersGrowing", {"callpass_webhook_dead_letters": "0x4 1x30"}, "12m", {}),
        ("CallPassDeadLettersGrowing", {"callpass_webhook_dead_letters": "3x40"}, "35m", None),
    ]
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [_promtool_test(rules[a], series, at, fires) for a, series, at, fires in cases],
    }
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(spec))
    out = _run(promtool, "test", "rules", str(tmp_path / "alerts_test.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", panel["datasource"])["uid"] == "${datasource}"
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for needed in (
        "outcomes",
        "api requests by status",
        "latency",
        "status requests per call",
        "in flight",
        "queue",
        "webhook deliveries",
        "dead letters",
        "limit refusals",
        "workers up",
    ):
        assert needed in titles, needed
