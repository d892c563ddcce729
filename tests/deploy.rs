//! The deployment files under `deploy/`, checked without Docker, Envoy or Kubernetes: every
//! YAML document parses, every plugin configuration we ship is accepted by the filter's own
//! parser, and the names that must agree across files (clusters, ports, hosts) do.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use serde::Deserialize;
use serde_json::Value;
use softprobe_filter::config::{self, Config, Direction};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";
const WASM_PATH: &str = "/etc/envoy/softprobe_filter.wasm";
/// What Istio calls the cluster of the runtime's Service, port 8080.
const ISTIO_RUNTIME_CLUSTER: &str = "outbound|8080||softprobe-runtime.softprobe.svc.cluster.local";

/// Every file under `dir` (recursively) whose extension is one of `exts`, sorted.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path, exts));
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| exts.contains(&e))
        {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The documents of a (possibly multi-document) YAML file.
fn parse_yaml(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).map_err(|e| e.to_string()))
        .filter(|doc| !matches!(doc, Ok(Value::Null)))
        .collect()
}

/// The documents of `deploy/<relative>`.
fn load(relative: &str) -> Vec<Value> {
    let path = Path::new(DEPLOY).join(relative);
    parse_yaml(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn text(relative: &str) -> String {
    std::fs::read_to_string(Path::new(DEPLOY).join(relative)).unwrap()
}

/// Every object anywhere in `value` for which `pick` holds, in document order.
fn find<'a>(value: &'a Value, pick: &dyn Fn(&Value) -> bool, out: &mut Vec<&'a Value>) {
    if pick(value) {
        out.push(value);
    }
    match value {
        Value::Array(items) => items.iter().for_each(|v| find(v, pick, out)),
        Value::Object(map) => map.values().for_each(|v| find(v, pick, out)),
        _ => {}
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

/// The documents of `kind`.
fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The plugin configuration JSON of each wasm filter in envoy.yaml, with its listener's port.
fn envoy_plugin_configs(envoy: &Value) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for listener in envoy["static_resources"]["listeners"].as_array().unwrap() {
        let port = listener["address"]["socket_address"]["port_value"]
            .as_u64()
            .unwrap();
        let mut wasm = Vec::new();
        find(listener, &|v| v["@type"] == WASM_FILTER_TYPE, &mut wasm);
        for filter in wasm {
            let plugin = &filter["config"];
            assert_eq!(
                str_at(plugin, "/vm_config/runtime"),
                "envoy.wasm.runtime.v8"
            );
            assert_eq!(str_at(plugin, "/vm_config/code/local/filename"), WASM_PATH);
            assert_eq!(str_at(plugin, "/configuration/@type"), STRING_VALUE_TYPE);
            out.push((port, str_at(plugin, "/configuration/value").to_owned()));
        }
    }
    out
}

fn envoy_cluster_names(envoy: &Value) -> BTreeSet<&str> {
    envoy["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

/// The document of `kind` named `name`.
fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The in-cluster DNS name of a Service.
fn service_host(service: &Value) -> String {
    format!(
        "{}.{}.svc.cluster.local",
        str_at(service, "/metadata/name"),
        str_at(service, "/metadata/namespace")
    )
}

/// The name Istio gives the cluster of a Service's `http` port.
fn istio_cluster(service: &Value) -> String {
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .unwrap();
    format!("outbound|{}||{}", port["port"], service_host(service))
}

/// The first container of a Deployment.
fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// A container's environment variables that have a literal value.
fn env_of(container: &Value) -> Vec<(&str, &str)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect()
}

fn accepted(json: &str, origin: &str) -> Config {
    config::parse(json).unwrap_or_else(|err| panic!("{origin}: plugin config refused: {err}"))
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let yaml = files(Path::new(DEPLOY), &["yaml", "yml"]);
    assert!(
        yaml.len() >= 7,
        "expected the deploy manifests, found {yaml:?}"
    );
    let failures: Vec<String> = yaml
        .iter()
        .filter_map(|path| match parse_yaml(path) {
            Ok(docs) if docs.is_empty() => Some(format!("{}: no document", path.display())),
            Ok(_) => None,
            Err(err) => Some(format!("{}: {err}", path.display())),
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_plugin_config_json_under_deploy_is_accepted() {
    // Any standalone .json under deploy/ is a plugin configuration (Envoy StringValue body).
    for path in files(Path::new(DEPLOY), &["json"]) {
        accepted(
            &std::fs::read_to_string(&path).unwrap(),
            &path.display().to_string(),
        );
    }
}

#[test]
fn envoy_plugin_configs_are_accepted_and_their_backend_cluster_exists() {
    let envoy = &load("envoy/envoy.yaml")[0];
    let clusters = envoy_cluster_names(envoy);
    let configs = envoy_plugin_configs(envoy);
    assert_eq!(configs.len(), 2, "one filter per listener");

    let mut directions = Vec::new();
    for (port, json) in &configs {
        let config = accepted(json, &format!("envoy.yaml listener :{port}"));
        // Set explicitly, never derived: the derived name would be outbound|8080||runtime.
        let raw: Value = serde_json::from_str(json).unwrap();
        assert_eq!(raw["backend_cluster"], config.backend.cluster.as_str());
        assert!(
            clusters.contains(config.backend.cluster.as_str()),
            ":{port}: backend_cluster {:?} is not a cluster of envoy.yaml {clusters:?}",
            config.backend.cluster
        );
        assert!(clusters.contains(config.backend.grpc_cluster.as_str()));
        directions.push((*port, config.direction));
    }
    directions.sort_by_key(|(port, _)| *port);
    assert_eq!(
        directions,
        [(8082, Direction::Inbound), (8084, Direction::Outbound)]
    );
}

#[test]
fn envoy_listeners_route_to_defined_clusters_through_the_filter() {
    let envoy = &load("envoy/envoy.yaml")[0];
    let clusters = envoy_cluster_names(envoy);
    let listeners = envoy["static_resources"]["listeners"].as_array().unwrap();
    let ports: Vec<u64> = listeners
        .iter()
        .map(|l| {
            l["address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ports, [8082, 8084]);

    for listener in listeners {
        let mut routes = Vec::new();
        find(listener, &|v| v.get("cluster").is_some(), &mut routes);
        assert!(!routes.is_empty());
        for route in routes {
            let target = route["cluster"].as_str().unwrap();
            assert!(
                clusters.contains(target),
                "route to unknown cluster {target}"
            );
        }

        let mut chains = Vec::new();
        find(listener, &|v| v.get("http_filters").is_some(), &mut chains);
        for chain in chains {
            let names: Vec<&str> = chain["http_filters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap())
                .collect();
            assert_eq!(names.first(), Some(&"envoy.filters.http.wasm"), "{names:?}");
            assert_eq!(
                names.last(),
                Some(&"envoy.filters.http.router"),
                "{names:?}"
            );
        }
    }
}

#[test]
fn a_broken_plugin_config_is_refused() {
    let envoy = &load("envoy/envoy.yaml")[0];
    let (_, json) = &envoy_plugin_configs(envoy)[0];
    let good: Value = serde_json::from_str(json).unwrap();
    accepted(json, "envoy.yaml");

    let mut no_direction = good.clone();
    no_direction
        .as_object_mut()
        .unwrap()
        .remove("traffic_direction");
    let err = config::parse(&no_direction.to_string()).unwrap_err();
    assert!(err.to_string().contains("traffic_direction"), "{err}");

    let mut typo = good;
    typo.as_object_mut()
        .unwrap()
        .insert("backend_clustr".into(), "softprobe_runtime".into());
    assert!(config::parse(&typo.to_string()).is_err());
}

#[test]
fn istio_wasm_plugins_are_accepted_and_name_the_runtime_service_cluster() {
    let docs = load("istio/wasmplugin.yaml");
    let plugins = of_kind(&docs, "WasmPlugin");
    assert_eq!(plugins.len(), 2);

    let mut modes = Vec::new();
    for plugin in plugins {
        assert_eq!(plugin["apiVersion"], "extensions.istio.io/v1alpha1");
        let name = str_at(plugin, "/metadata/name");
        let config = accepted(&plugin["spec"]["pluginConfig"].to_string(), name);
        assert_eq!(config.backend.cluster, ISTIO_RUNTIME_CLUSTER, "{name}");
        let mode = str_at(plugin, "/spec/match/0/mode");
        let expected = match mode {
            "SERVER" => Direction::Inbound,
            "CLIENT" => Direction::Outbound,
            other => panic!("{name}: unexpected match mode {other}"),
        };
        assert_eq!(config.direction, expected, "{name}");
        modes.push(mode);
    }
    modes.sort_unstable();
    assert_eq!(modes, ["CLIENT", "SERVER"]);

    // The cluster name is what Istio derives from the runtime's Service and its http port.
    let runtime = load("kubernetes/runtime.yaml");
    let service = of_kind(&runtime, "Service")[0];
    assert_eq!(istio_cluster(service), ISTIO_RUNTIME_CLUSTER);
    let host = service_host(service);

    let rule = &load("istio/backend.yaml")[0];
    assert_eq!(rule["kind"], "DestinationRule");
    assert_eq!(rule["spec"]["host"], host.as_str());
    let entry = &load("istio/serviceentry.yaml")[0];
    assert_eq!(entry["kind"], "ServiceEntry");
    assert_eq!(entry["spec"]["hosts"][0], host.as_str());
    assert!(
        entry["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["number"] == 8080 && p["protocol"] == "HTTP")
    );
}

#[test]
fn the_runtime_deployment_listens_on_all_interfaces_and_probes_health() {
    let docs = load("kubernetes/runtime.yaml");
    let deployment = of_kind(&docs, "Deployment")[0];
    // Sessions live in memory: a second replica would split them.
    assert_eq!(deployment["spec"]["replicas"], 1);
    let container = container(deployment);
    let env = env_of(container);
    assert!(env.contains(&("SOFTPROBE_LISTEN_ADDR", "0.0.0.0:8080")));
    assert!(env.contains(&("SOFTPROBE_GRPC_LISTEN_ADDR", "0.0.0.0:4317")));
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/health", "{probe}");
    }
    let ports: Vec<u64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8080, 4317]);
}

#[test]
fn the_redis_manifest_runs_several_runtimes_on_one_redis() {
    let docs = load("kubernetes/runtime-redis.yaml");
    let single = load("kubernetes/runtime.yaml");

    // One Redis, with an append-only file, behind the Service the runtime is pointed at.
    let redis = named(&docs, "Deployment", "softprobe-redis");
    assert!(str_at(container(redis), "/image").starts_with("redis:7"));
    let args: Vec<&str> = container(redis)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "{args:?}"
    );
    let redis_service = named(&docs, "Service", "softprobe-redis");
    assert_eq!(
        redis_service["spec"]["selector"],
        redis["spec"]["template"]["metadata"]["labels"]
    );
    let redis_port = &redis_service["spec"]["ports"][0];
    assert_eq!(redis_port["port"], 6379);
    let store_url = format!(
        "redis://{}:{}",
        service_host(redis_service),
        redis_port["port"]
    );

    // Several runtimes, replaced one at a time, all on that Redis.
    let deployment = named(&docs, "Deployment", "softprobe-runtime");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let runtime = container(deployment);
    let env = env_of(runtime);
    assert!(
        env.contains(&("SOFTPROBE_STORE_URL", store_url.as_str())),
        "{store_url} not in {env:?}"
    );
    // Ready only while Redis answers; alive, and started, regardless.
    assert_eq!(runtime["readinessProbe"]["httpGet"]["path"], "/ready");
    for probe in ["startupProbe", "livenessProbe"] {
        assert_eq!(runtime[probe]["httpGet"]["path"], "/health", "{probe}");
    }

    // Otherwise the same runtime as runtime.yaml: every variable, port, limit and security
    // setting.
    let single_deployment = of_kind(&single, "Deployment")[0];
    let single_runtime = container(single_deployment);
    let vars = runtime["env"].as_array().unwrap();
    for var in single_runtime["env"].as_array().unwrap() {
        assert!(vars.contains(var), "runtime-redis.yaml lacks {var}");
    }
    for key in ["image", "args", "ports", "resources", "securityContext"] {
        assert_eq!(runtime[key], single_runtime[key], "{key}");
    }
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"],
        single_deployment["spec"]["template"]["spec"]["securityContext"]
    );

    // The same Service, so Istio's cluster name (the filter's backend_cluster) still holds.
    let service = named(&docs, "Service", "softprobe-runtime");
    assert_eq!(istio_cluster(service), ISTIO_RUNTIME_CLUSTER);
    assert_eq!(service, of_kind(&single, "Service")[0]);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
}

#[test]
fn the_compose_redis_override_points_the_runtime_at_its_redis() {
    let base = &load("compose/docker-compose.yaml")[0];
    let over = &load("compose/docker-compose.redis.yaml")[0];
    assert!(base["services"].get("runtime").is_some());
    let services = over["services"].as_object().unwrap();

    let runtime = &services["runtime"];
    let url = str_at(runtime, "/environment/SOFTPROBE_STORE_URL");
    let (host, port) = url
        .strip_prefix("redis://")
        .and_then(|rest| rest.split_once(':'))
        .unwrap_or_else(|| panic!("not redis://host:port: {url}"));
    assert_eq!(port, "6379");
    let redis = services
        .get(host)
        .unwrap_or_else(|| panic!("{url} names no service of the override"));
    assert!(str_at(redis, "/image").starts_with("redis:7"));
    assert!(
        redis["command"]
            .to_string()
            .contains(r#""--appendonly","yes""#)
    );
    // The runtime refuses to start without its store.
    assert_eq!(runtime["depends_on"][host]["condition"], "service_healthy");
    assert!(redis.get("healthcheck").is_some());

    // Named volumes the override mounts are declared in it.
    for volume in redis["volumes"].as_array().into_iter().flatten() {
        let source = volume.as_str().unwrap().split(':').next().unwrap();
        assert!(
            over["volumes"].get(source).is_some(),
            "undeclared volume {source}"
        );
    }
}

#[test]
fn compose_runs_the_four_services_with_both_runtime_ports() {
    let compose = &load("compose/docker-compose.yaml")[0];
    let services = compose["services"].as_object().unwrap();
    for name in ["runtime", "envoy", "app", "upstream"] {
        assert!(services.contains_key(name), "no service {name}");
    }
    let runtime = &services["runtime"];
    assert_eq!(
        runtime["environment"]["SOFTPROBE_LISTEN_ADDR"],
        "0.0.0.0:8080"
    );
    assert_eq!(
        runtime["environment"]["SOFTPROBE_GRPC_LISTEN_ADDR"],
        "0.0.0.0:4317"
    );
    let ports = runtime["ports"].to_string();
    assert!(
        ports.contains("8080:8080") && ports.contains("4317:4317"),
        "{ports}"
    );
    assert!(services["envoy"]["ports"].to_string().contains("8082:8082"));

    // Build contexts, Dockerfiles and mounted files exist where compose will look.
    let dir = Path::new(DEPLOY).join("compose");
    for service in services.values() {
        if let Some(build) = service.get("build") {
            let context = dir.join(str_at(build, "/context"));
            assert!(context.join(str_at(build, "/dockerfile")).is_file());
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(dir.join(source).is_file(), "missing mount {source}");
            }
        }
    }

    // The envoy.yaml hostnames are compose service names.
    let envoy = text("envoy/envoy.yaml");
    assert!(envoy.contains("address: runtime, port_value: 8080"));
    assert!(envoy.contains("address: app, port_value: 8081"));
    assert!(text("compose/app/nginx.conf").contains("listen 8081;"));
}

#[test]
fn the_dockerfile_builds_the_runtime_and_the_filter_envoy_loads() {
    let dockerfile = text("docker/Dockerfile");
    assert!(dockerfile.contains("FROM rust:"));
    assert!(dockerfile.contains(
        "cargo build --locked --profile wasm-release -p softprobe-filter --target wasm32-wasip1"
    ));
    assert!(dockerfile.contains(&format!("/out/softprobe_filter.wasm {WASM_PATH}")));
    assert!(dockerfile.contains("COPY deploy/envoy/envoy.yaml /etc/envoy/envoy.yaml"));
    for target in ["AS build", "AS runtime", "AS envoy", "AS filter"] {
        assert!(dockerfile.contains(target), "no stage {target}");
    }
}

#[test]
fn the_collector_forwards_traces_to_the_runtime() {
    let collector = &load("collector/otel-collector.yaml")[0];
    assert_eq!(
        collector["exporters"]["otlp/softprobe"]["endpoint"],
        "runtime:4317"
    );
    assert_eq!(
        collector["exporters"]["otlphttp/softprobe"]["endpoint"],
        "http://runtime:8080"
    );
    let pipeline = &collector["service"]["pipelines"]["traces"];
    for (section, key) in [
        ("receivers", "receivers"),
        ("processors", "processors"),
        ("exporters", "exporters"),
    ] {
        for name in pipeline[key].as_array().unwrap() {
            let name = name.as_str().unwrap();
            assert!(
                collector[section].get(name).is_some(),
                "pipeline uses undefined {section} {name}"
            );
        }
    }
    // Exactly one exporter to the runtime, or every span would arrive twice.
    assert_eq!(pipeline["exporters"].as_array().unwrap().len(), 1);
}

#[test]
fn every_deploy_folder_has_a_readme() {
    assert!(Path::new(DEPLOY).join("README.md").is_file());
    for entry in std::fs::read_dir(DEPLOY).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert!(path.join("README.md").is_file(), "{}", path.display());
        }
    }
}
