//! The deploy/ artifacts against the real relay:
//!
//! - every metric the Grafana dashboard and the alert rules read is served on `/metrics` by the
//!   real `callrelay` binary (process metrics included, which only `main` registers);
//! - the Dockerfile, the compose file and the Kubernetes manifests set only real configuration
//!   keys, their configuration validates, and their ports, probes and stop timeouts agree with it;
//! - the container health check script passes against a live relay and fails against nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use callrelay_server::config::{Config, Overrides, Settings};
use callrelay_server::metrics::{MediaMetrics, Metrics};
use serde_norway::Value;

#[path = "support/relay.rs"]
mod support;
use support::{free_port, token, Relay, SECRET};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|d| {
            <Value as serde::Deserialize>::deserialize(d)
                .unwrap_or_else(|e| panic!("{rel} does not parse as YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

// ---- metric names -------------------------------------------------------------------------

/// Names matching `callrelay_[a-z0-9_]+` or `process_[a-z_]+` that start a word in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    for (prefix, digits) in [("callrelay_", true), ("process_", false)] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            from = start + prefix.len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            let end = text[from..]
                .find(|c: char| {
                    !(c.is_ascii_lowercase() || c == '_' || (digits && c.is_ascii_digit()))
                })
                .map_or(text.len(), |i| from + i);
            if end > from {
                out.insert(text[start..end].to_owned());
            }
        }
    }
    out
}

/// Every string in a YAML or JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Mapping(m) => m.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        Value::Tagged(t) => strings(&t.value, out),
        _ => {}
    }
}

fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|i| json_strings(i, out)),
        serde_json::Value::Object(m) => m.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// Metric families (name -> type) of a Prometheus text exposition.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.trim().to_owned()))
        .collect()
}

/// Whether `name` is declared by the relay's metric registration, checked by registering a probe
/// of that name next to `Metrics` and `MediaMetrics`: the registry refuses a second descriptor of
/// an existing name. Used only for labelled families that have no series until their subsystem
/// runs (the client library does not render an empty family).
fn declared_by_the_relay(name: &str) -> bool {
    let registry = prometheus::Registry::new();
    Metrics::register(&registry).expect("control-plane metrics register");
    MediaMetrics::register(&registry).expect("media-plane metrics register");
    let probe = prometheus::IntGauge::new(name, "probe").expect("a valid metric name");
    registry.register(Box::new(probe)).is_err()
}

/// Checks a metric name used by an expression against the served families.
fn served(name: &str, fams: &BTreeMap<String, String>) -> Result<(), String> {
    if fams.contains_key(name) {
        return Ok(());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if fams.get(base).map(String::as_str) == Some("histogram") {
                return Ok(());
            }
        }
    }
    if name.starts_with("callrelay_") && declared_by_the_relay(name) {
        eprintln!("note: {name} is declared by the relay but has no series yet in this run (a labelled family whose subsystem is idle)");
        return Ok(());
    }
    Err(format!("{name} is not served on /metrics"))
}

fn healthcheck(port: u16) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("deploy/healthcheck.sh"))
        .env_clear()
        .env("CALLRELAY_HTTP_ADDR", format!("0.0.0.0:{port}"))
        .output()
        .expect("run bash deploy/healthcheck.sh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_read_only_metrics_the_relay_serves() {
    // The names the dashboard and the rules use.
    let mut used: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/callrelay.json")).expect("dashboard JSON");
    let mut texts = Vec::new();
    json_strings(&dashboard, &mut texts);
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        exprs += panel["targets"].as_array().map_or(0, |t| t.len());
    }
    assert!(exprs >= 20, "the dashboard has {exprs} queries");
    for t in &texts {
        for n in metric_names(t) {
            used.entry(n)
                .or_default()
                .insert("deploy/grafana/callrelay.json");
        }
    }
    let rules = yaml_docs("deploy/prometheus/alerts.yml");
    let mut texts = Vec::new();
    let mut alerts = 0;
    for group in rules[0]["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            assert!(rule["expr"].as_str().is_some(), "a rule without expr");
            alerts += 1;
            strings(rule, &mut texts);
        }
    }
    assert!(alerts >= 8, "alerts.yml has {alerts} rules");
    for t in &texts {
        for n in metric_names(t) {
            used.entry(n)
                .or_default()
                .insert("deploy/prometheus/alerts.yml");
        }
    }
    for must in [
        "callrelay_forward_latency_seconds_bucket",
        "callrelay_datagrams_dropped_total",
        "callrelay_joins_total",
        "callrelay_store_up",
        "callrelay_draining",
        "callrelay_drain_started_timestamp_seconds",
        "callrelay_worker_busy_ratio",
        "process_cpu_seconds_total",
    ] {
        assert!(used.contains_key(must), "the extractor missed {must}");
    }

    // A real relay, with a little traffic so that labelled families have series.
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let base = relay.base.clone();
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {}", token("alice", false));
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let link: serde_json::Value = http
        .post(format!("{base}/v1/links"))
        .header("authorization", &bearer)
        .json(&serde_json::json!({"kind": "video"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = link["id"].as_str().expect("a link id");
    let join = http
        .post(format!("{base}/v1/links/{id}/join"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(join.status(), 200);
    let missing = http
        .post(format!("{base}/v1/links/AAAAAAAAAAAAAAAAAAAAAA/join"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let exposition = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fams = families(&exposition);
    assert!(
        fams.contains_key("process_cpu_seconds_total"),
        "the binary serves process metrics"
    );

    let mut missing_names = Vec::new();
    for (name, files) in &used {
        if let Err(e) = served(name, &fams) {
            missing_names.push(format!("{e} (used in {files:?})"));
        }
    }
    assert!(
        missing_names.is_empty(),
        "names in deploy/ that the relay does not serve:\n  {}",
        missing_names.join("\n  ")
    );
    // The check itself can fail.
    assert!(served("callrelay_forward_latency_seconds_bucket", &fams).is_ok());
    assert!(served("callrelay_forward_latency_seconds_total", &fams).is_err());
    assert!(served("callrelay_joins_total_bucket", &fams).is_err());
    assert!(served("process_no_such_thing", &fams).is_err());
    assert!(declared_by_the_relay("callrelay_worker_busy_ratio"));
    assert!(declared_by_the_relay("callrelay_draining"));
    assert!(!declared_by_the_relay("callrelay_no_such_metric"));

    // The container health check: passes against the live relay, fails with nothing listening.
    let ok = healthcheck(relay.port);
    assert!(
        ok.status.success(),
        "healthcheck.sh against a live relay: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    relay.stop();
    assert!(!healthcheck(free_port()).status.success());
}

// ---- configuration in the manifests --------------------------------------------------------

/// `CALLRELAY_<SECTION>_<KEY>` of every configuration key.
fn env_names() -> BTreeSet<String> {
    Config::keys()
        .into_iter()
        .map(|(s, k)| format!("CALLRELAY_{}_{}", s, k).to_ascii_uppercase())
        .collect()
}

fn assert_real_keys<'a>(file: &str, names: impl IntoIterator<Item = &'a String>) -> usize {
    let known = env_names();
    let mut n = 0;
    for name in names {
        if name.starts_with("CALLRELAY_") {
            assert!(
                known.contains(name),
                "{file} sets {name}, which is no configuration key (known: {known:?})"
            );
            n += 1;
        }
    }
    n
}

fn settings(file: Option<&Path>, env: &BTreeMap<String, String>, what: &str) -> Settings {
    Config::load(file, env.clone())
        .and_then(|c| c.validate(&Overrides::default(), false))
        .unwrap_or_else(|e| panic!("{what}: the configuration does not validate: {e}"))
}

/// Compose interpolation of the forms used: `${VAR:-default}` takes the default, `${VAR:?msg}`
/// (a required variable) takes `required(VAR)` in its place.
fn interpolate(value: &str, required: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').expect("closing brace") + at;
        let inner = &rest[at + 2..end];
        if let Some((_, default)) = inner.split_once(":-") {
            out.push_str(default);
        } else if let Some((var, _)) = inner.split_once(":?") {
            out.push_str(&required(var));
        } else {
            panic!("${{{inner}}} has no default");
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn media_ports(s: &Settings) -> BTreeSet<u16> {
    s.media_addrs.iter().map(|a| a.port()).collect()
}

#[test]
fn dockerfile_sets_real_keys_and_exposes_its_ports() {
    let text = read("deploy/Dockerfile").replace("\\\n", " ");
    let mut env = BTreeMap::new();
    let mut exposed = BTreeSet::new();
    let mut healthcheck = false;
    let mut stopsignal = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("ENV K=V");
                env.insert(k.to_owned(), v.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("EXPOSE ") {
            exposed.extend(rest.split_whitespace().map(str::to_owned));
        } else if line.starts_with("HEALTHCHECK ") {
            healthcheck = line.contains("callrelay-healthcheck");
        } else if let Some(rest) = line.strip_prefix("STOPSIGNAL ") {
            stopsignal = Some(rest.to_owned());
        }
    }
    assert!(assert_real_keys("deploy/Dockerfile", env.keys()) >= 4);
    assert!(healthcheck, "HEALTHCHECK runs callrelay-healthcheck");
    assert!(text.contains("COPY deploy/healthcheck.sh /usr/local/bin/callrelay-healthcheck"));
    assert_eq!(stopsignal.as_deref(), Some("SIGTERM"));
    // What the operator must add: a secret and the announced address.
    env.insert("CALLRELAY_AUTH_SECRET".into(), SECRET.into());
    env.insert("CALLRELAY_MEDIA_ANNOUNCE_IP".into(), "203.0.113.7".into());
    let s = settings(None, &env, "Dockerfile ENV");
    assert!(
        s.http_addr.ip().is_unspecified(),
        "listens on every interface"
    );
    assert!(
        exposed.contains(&format!("{}/tcp", s.http_addr.port())),
        "EXPOSE the HTTP port {}: {exposed:?}",
        s.http_addr.port()
    );
    let udp: BTreeSet<u16> = exposed
        .iter()
        .filter_map(|p| p.strip_suffix("/udp"))
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(udp, media_ports(&s), "EXPOSEd UDP ports = media.ports");
    // ICE-TCP listens on the same numbers over TCP.
    let tcp: BTreeSet<u16> = exposed
        .iter()
        .filter_map(|p| p.strip_suffix("/tcp"))
        .map(|p| p.parse().unwrap())
        .filter(|p| *p != s.http_addr.port())
        .collect();
    let want = if s.tcp_max_connections.is_some() {
        media_ports(&s)
    } else {
        BTreeSet::new()
    };
    assert_eq!(
        tcp, want,
        "EXPOSEd TCP media ports = media.ports (media.tcp)"
    );
    assert_eq!(
        env["CALLRELAY_STORE_DATA_DIR"], "/var/lib/callrelay",
        "the data directory is the VOLUME"
    );
}

/// What the operator must set for compose (`${VAR:?…}`): a secret and the announced address.
fn compose_required(var: &str) -> String {
    match var {
        "CALLRELAY_ANNOUNCE_IP" => "203.0.113.7".into(),
        "CALLRELAY_AUTH_SECRET" => SECRET.into(),
        other => {
            panic!("${{{other}:?…}} is required by the compose file: give the test a stand-in")
        }
    }
}

#[test]
fn compose_sets_real_keys_and_publishes_its_ports() {
    let docs = yaml_docs("deploy/docker-compose.yml");
    let services = docs[0]["services"].as_mapping().expect("services");
    for name in ["callrelay", "postgres", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "service {name}");
    }
    let prometheus_yml = read("deploy/prometheus/prometheus.yml");
    // Three relay nodes of one cluster: `callrelay` (node callrelay-1), `callrelay-2`, `callrelay-3`.
    let nodes = ["callrelay", "callrelay-2", "callrelay-3"];
    let mut node_ids = BTreeSet::new();
    let mut advertised = BTreeSet::new();
    let mut all_udp = BTreeSet::new();
    let mut all_tcp = BTreeSet::new();
    for service in nodes {
        let relay = &docs[0]["services"][service];
        let mut env = BTreeMap::new();
        for (k, v) in relay["environment"].as_mapping().expect("environment map") {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("{k:?}: {other:?}"),
            };
            // No silent default for the announced address: compose must fail without it.
            if k.as_str() == Some("CALLRELAY_MEDIA_ANNOUNCE_IP") {
                assert!(v.starts_with("${CALLRELAY_ANNOUNCE_IP:?"), "{service}: {v}");
            }
            env.insert(
                k.as_str().unwrap().to_owned(),
                interpolate(&v, compose_required),
            );
        }
        assert!(assert_real_keys("deploy/docker-compose.yml", env.keys()) >= 7);
        assert!(env["CALLRELAY_STORE_DATABASE_URL"].contains("@postgres:5432/"));
        let s = settings(
            None,
            &env,
            &format!("docker-compose.yml {service} environment"),
        );
        assert!(
            node_ids.insert(s.cluster.node_id.clone()),
            "{service}: node_id reused"
        );
        assert!(
            advertised.insert(s.cluster.advertise_url.clone()),
            "{service}: advertise_url reused"
        );
        assert_eq!(
            s.announce_ips,
            ["203.0.113.7".parse::<std::net::IpAddr>().unwrap()]
        );

        let mut tcp = BTreeSet::new();
        let mut udp = BTreeSet::new();
        for p in relay["ports"].as_sequence().expect("ports") {
            let p = p.as_str().expect("\"host:container/proto\"");
            let (mapping, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            let (host, container) = mapping.rsplit_once(':').expect("host:container");
            assert_eq!(
                host.rsplit(':').next(),
                Some(container),
                "{service} {p}: same port outside"
            );
            let port: u16 = container.parse().unwrap();
            match proto {
                "tcp" => tcp.insert(port),
                "udp" => udp.insert(port),
                other => panic!("{other}"),
            };
        }
        let mut want_tcp = BTreeSet::from([s.http_addr.port()]);
        if s.tcp_max_connections.is_some() {
            want_tcp.extend(media_ports(&s));
        }
        assert_eq!(
            tcp, want_tcp,
            "{service}: HTTP port, and the media ports for ICE-TCP (media.tcp)"
        );
        assert_eq!(
            udp,
            media_ports(&s),
            "{service}: published UDP ports = media.ports"
        );
        assert!(
            all_udp.is_disjoint(&udp),
            "{service}: UDP ports of another node"
        );
        assert!(
            all_tcp.is_disjoint(&tcp),
            "{service}: HTTP port of another node"
        );
        all_udp.extend(udp);
        all_tcp.extend(tcp);
        let grace = duration(
            relay["stop_grace_period"]
                .as_str()
                .expect("stop_grace_period"),
        );
        assert!(
            grace > s.drain_deadline,
            "{service}: stop_grace_period {grace:?} <= drain.deadline"
        );
        let target = format!("\"{service}:{}\"", s.http_addr.port());
        assert!(
            prometheus_yml.contains(&target),
            "prometheus.yml scrapes {target}"
        );
    }

    // Prometheus gets the config directory that holds the rules; Grafana its provisioning.
    let prom = format!("{:?}", docs[0]["services"]["prometheus"]["volumes"]);
    assert!(prom.contains("./prometheus:/etc/prometheus"), "{prom}");
    let graf = format!("{:?}", docs[0]["services"]["grafana"]["volumes"]);
    assert!(graf.contains("./grafana/provisioning:/etc/grafana/provisioning"));
    assert!(graf.contains("./grafana/callrelay.json:"));
    for f in [
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/grafana/provisioning/dashboards/callrelay.yml",
    ] {
        assert!(!yaml_docs(f).is_empty(), "{f}");
    }
}

/// Every object of the kustomization, by kind and name.
fn k8s_objects() -> (Value, BTreeMap<(String, String), Value>) {
    let kust = yaml_docs("deploy/kubernetes/kustomization.yaml").remove(0);
    let mut objects = BTreeMap::new();
    for r in kust["resources"].as_sequence().expect("resources") {
        let file = format!("deploy/kubernetes/{}", r.as_str().unwrap());
        for doc in yaml_docs(&file) {
            let kind = doc["kind"].as_str().expect("kind").to_owned();
            let name = doc["metadata"]["name"].as_str().expect("name").to_owned();
            objects.insert((kind, name), doc);
        }
    }
    (kust, objects)
}

fn get<'a>(objects: &'a BTreeMap<(String, String), Value>, kind: &str, name: &str) -> &'a Value {
    objects
        .get(&(kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("no {kind}/{name} in deploy/kubernetes"))
}

fn matches(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_mapping().expect("matchLabels");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn kubernetes_manifests_agree_with_the_configuration() {
    let (kust, objects) = k8s_objects();
    let sts = get(&objects, "StatefulSet", "callrelay");
    let pod = &sts["spec"]["template"]["spec"];
    let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert!(matches(&sts["spec"]["selector"]["matchLabels"], pod_labels));
    assert!(
        pod["hostNetwork"].is_null() || pod["hostNetwork"] == Value::Bool(false),
        "no host networking by default"
    );
    // A Service named `callrelay` would otherwise inject CALLRELAY_SERVICE_HOST and friends.
    assert_eq!(pod["enableServiceLinks"], Value::Bool(false));
    let containers = pod["containers"].as_sequence().expect("containers");
    let c = containers
        .iter()
        .find(|c| c["name"] == "callrelay")
        .expect("container callrelay");

    // The config file: generated from callrelay.toml, mounted where --config points.
    let gen = kust["configMapGenerator"]
        .as_sequence()
        .expect("configMapGenerator")
        .iter()
        .find(|g| g["name"] == "callrelay-config")
        .expect("configMapGenerator callrelay-config");
    let file = gen["files"][0].as_str().expect("a file");
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| args[i + 1])
        .expect("serve --config");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == "callrelay-config")
        .expect("a volume of the ConfigMap");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap mounted");
    assert_eq!(
        config_path,
        format!("{}/{file}", mount["mountPath"].as_str().unwrap())
    );

    // Environment: real keys; values as they will be at run time (stand-ins for the node's
    // address and the secret, the Secret's own value for the rest).
    let secret = get(&objects, "Secret", "callrelay");
    let secret_data = secret["stringData"].as_mapping().expect("stringData");
    let secret_keys: Vec<String> = secret_data
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_real_keys("deploy/kubernetes/secret.yaml", secret_keys.iter());
    assert!(secret_keys.contains(&"CALLRELAY_AUTH_SECRET".to_owned()));
    assert!(secret_keys.contains(&"CALLRELAY_STORE_DATABASE_URL".to_owned()));
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for e in c["env"].as_sequence().expect("env") {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            // Kubernetes expands $(NAME) of the variables defined before this one.
            let mut v = v.to_owned();
            for (k, val) in &env {
                v = v.replace(&format!("$({k})"), val);
            }
            assert!(
                !v.contains("$("),
                "env {name}: {v} refers to an undefined variable"
            );
            v
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "status.hostIP" => "10.1.2.3".to_owned(),
                "metadata.name" => "callrelay-0".to_owned(),
                other => panic!("env {name}: unexpected fieldRef {other}"),
            }
        } else if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
            assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], "callrelay");
            assert!(secret_keys.iter().any(|k| k == key), "Secret key {key}");
            if name == "CALLRELAY_AUTH_SECRET" {
                SECRET.to_owned()
            } else {
                secret["stringData"][key].as_str().unwrap().to_owned()
            }
        } else {
            panic!("env {name}: unexpected source");
        };
        env.insert(name, value);
    }
    assert!(assert_real_keys("deploy/kubernetes/statefulset.yaml", env.keys()) >= 3);
    let toml = repo().join("deploy/kubernetes").join(file);
    let s = settings(Some(&toml), &env, "deploy/kubernetes (ConfigMap + env)");
    assert_eq!(
        s.announce_ips,
        ["10.1.2.3".parse::<std::net::IpAddr>().unwrap()],
        "announce the node IP"
    );
    assert_eq!(s.cluster.node_id, "callrelay-0", "node_id = the pod name");
    assert_eq!(
        s.cluster.advertise_url, "https://callrelay-0.calls.example.org",
        "advertise_url per pod"
    );

    // Ports: HTTP named http, one UDP port per worker on the same number on the node (the relay
    // announces its bound port).
    let mut http_port = None;
    let mut udp = BTreeSet::new();
    let mut media_tcp = BTreeSet::new();
    for p in c["ports"].as_sequence().expect("ports") {
        let port = p["containerPort"].as_u64().unwrap() as u16;
        match p["protocol"].as_str().unwrap_or("TCP") {
            "TCP" if p["name"] == "http" => http_port = Some(port),
            "TCP" => {
                // ICE-TCP: a media port over TCP, on the same number on the node.
                assert_eq!(
                    p["hostPort"].as_u64(),
                    Some(u64::from(port)),
                    "hostPort = containerPort"
                );
                media_tcp.insert(port);
            }
            "UDP" => {
                assert_eq!(
                    p["hostPort"].as_u64(),
                    Some(u64::from(port)),
                    "hostPort = containerPort"
                );
                udp.insert(port);
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(http_port, Some(s.http_addr.port()), "containerPort http");
    assert_eq!(udp, media_ports(&s), "UDP containerPorts = media.ports");
    if s.tcp_max_connections.is_some() {
        assert_eq!(
            media_tcp,
            media_ports(&s),
            "TCP media containerPorts = media.ports (ICE-TCP)"
        );
    }
    assert_eq!(s.media_workers, udp.len());

    // Probes: liveness /healthz, readiness /readyz, both on the HTTP port.
    let probe_port = |probe: &Value| -> u16 {
        match &probe["httpGet"]["port"] {
            Value::String(name) => {
                assert_eq!(name, "http");
                s.http_addr.port()
            }
            Value::Number(n) => n.as_u64().unwrap() as u16,
            other => panic!("probe port {other:?}"),
        }
    };
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(probe_port(&c[probe]), s.http_addr.port(), "{probe}");
    }

    // Stopping: the grace period covers the preStop pause and the whole drain.
    let pre_stop: Vec<&str> = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .expect("preStop exec")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let pause = match pre_stop.as_slice() {
        ["/bin/sleep", secs] => Duration::from_secs(secs.parse().unwrap()),
        other => panic!("preStop {other:?}"),
    };
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    assert!(
        grace > s.drain_deadline + pause,
        "terminationGracePeriodSeconds {grace:?} <= drain.deadline {:?} + preStop {pause:?}",
        s.drain_deadline
    );

    // Resources: the documented request.
    assert_eq!(c["resources"]["requests"]["cpu"], "2");
    assert_eq!(c["resources"]["requests"]["memory"], "1Gi");

    // Services select the pods and reach port http; the ServiceMonitor scrapes the Service that
    // keeps unready (draining) pods.
    for name in ["callrelay", "callrelay-nodes"] {
        let svc = get(&objects, "Service", name);
        assert!(matches(&svc["spec"]["selector"], pod_labels), "{name}");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http", "{name}");
        assert_eq!(svc["spec"]["ports"][0]["name"], "http", "{name}");
    }
    assert_eq!(
        get(&objects, "Service", "callrelay-nodes")["spec"]["publishNotReadyAddresses"],
        Value::Bool(true)
    );
    assert_eq!(sts["spec"]["serviceName"], "callrelay-nodes");
    let sm = get(&objects, "ServiceMonitor", "callrelay");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    let scraped: Vec<&String> = objects
        .iter()
        .filter(|((k, _), svc)| {
            k == "Service"
                && matches(
                    &sm["spec"]["selector"]["matchLabels"],
                    &svc["metadata"]["labels"],
                )
        })
        .map(|((_, n), _)| n)
        .collect();
    assert_eq!(scraped, vec!["callrelay-nodes"], "ServiceMonitor selects");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let pdb = get(&objects, "PodDisruptionBudget", "callrelay");
    assert!(matches(&pdb["spec"]["selector"]["matchLabels"], pod_labels));

    // Per pod: a Service of that pod alone, ready or not (a draining pod still hosts calls), and an
    // ingress host routed to it, which is the pod's advertise_url.
    let ingress = get(&objects, "Ingress", "callrelay");
    let rules = ingress["spec"]["rules"]
        .as_sequence()
        .expect("ingress rules");
    let replicas = sts["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 3, "a cluster of at least three nodes");
    for i in 0..replicas {
        let pod = format!("callrelay-{i}");
        let svc = get(&objects, "Service", &pod);
        assert_eq!(
            svc["spec"]["publishNotReadyAddresses"],
            Value::Bool(true),
            "{pod}"
        );
        assert_eq!(
            svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"],
            pod.as_str()
        );
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http", "{pod}");
        let host = s.cluster.advertise_url.replace("callrelay-0", &pod);
        let host = host.strip_prefix("https://").expect("https advertise_url");
        let rule = rules
            .iter()
            .find(|r| r["host"] == host)
            .unwrap_or_else(|| panic!("no ingress rule for {host}"));
        assert_eq!(
            rule["http"]["paths"][0]["backend"]["service"]["name"],
            pod.as_str()
        );
    }
    let public = s
        .public_url
        .strip_prefix("https://")
        .expect("https public_url");
    let rule = rules
        .iter()
        .find(|r| r["host"] == public)
        .expect("an ingress rule for http.public_url");
    assert_eq!(
        rule["http"]["paths"][0]["backend"]["service"]["name"],
        "callrelay"
    );
}

#[test]
fn systemd_unit_waits_for_the_drain() {
    let unit = read("deploy/systemd/callrelay.service");
    let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            values.entry(k).or_default().push(v);
        }
    }
    let one = |k: &str| -> &str {
        match values.get(k).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("{k}: {other:?}"),
        }
    };
    let env: BTreeMap<String, String> = values["Environment"]
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("Environment=K=V");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert_real_keys("deploy/systemd/callrelay.service", env.keys());
    assert_eq!(env["CALLRELAY_STORE_DATA_DIR"], "/var/lib/callrelay");
    assert_eq!(one("StateDirectory"), "callrelay");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("EnvironmentFile"), "-/etc/callrelay/env");
    assert_eq!(one("DynamicUser"), "yes");
    // The unit runs with the example configuration's drain.deadline unless the file changes it.
    let mut with_secret = env.clone();
    with_secret.insert("CALLRELAY_AUTH_SECRET".into(), SECRET.into());
    let s = settings(
        Some(&repo().join("callrelay.example.toml")),
        &with_secret,
        "the unit's environment over callrelay.example.toml",
    );
    let stop = duration(one("TimeoutStopSec"));
    assert!(
        stop > s.drain_deadline,
        "TimeoutStopSec {stop:?} <= drain.deadline {:?}",
        s.drain_deadline
    );
}
