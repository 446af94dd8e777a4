//! The Dockerfile and docker-compose.yml, checked for what can be checked without a Docker
//! engine (none runs here or in CI): every file they copy or mount exists, the image and
//! every compose service agree on ports and paths with the configs they load, those configs
//! are valid, the health check probes the admin `/healthz`, and the image runs as non-root.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hubgate::Config;
use hubgate_sim::SimConfig;
use yaml_serde::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("{relative} cannot be read: {e}"))
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

fn load_config(relative: &str) -> Config {
    Config::load(&repo().join(relative)).unwrap_or_else(|e| panic!("{relative} is invalid:\n{e}"))
}

/// One Dockerfile instruction: keyword (upper case) and its arguments, continuation lines
/// joined and comments dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// The Dockerfile's stages, in order, each a list of instructions (FROM first).
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push(instruction);
    }
    stages
}

/// A COPY's flags, sources and destination.
fn copy_parts(args: &str) -> (Vec<&str>, Vec<&str>, &str) {
    let words: Vec<&str> = args.split_whitespace().collect();
    let (flags, paths): (Vec<&str>, Vec<&str>) = words.iter().partition(|w| w.starts_with("--"));
    let (destination, sources) = paths.split_last().expect("COPY names a destination");
    (flags, sources.to_vec(), destination)
}

/// An exec-form (JSON array) argument list, e.g. of HEALTHCHECK CMD or ENTRYPOINT.
fn exec_form(text: &str) -> Vec<String> {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not exec form ({e}): {text}"))
}

/// Whether `.dockerignore` keeps `source` out of the build context.
fn docker_ignores(source: &str) -> bool {
    let first = source
        .trim_start_matches("./")
        .split('/')
        .next()
        .unwrap_or("");
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|pattern| {
            let pattern = pattern.trim_end_matches('/');
            match pattern.strip_prefix('*') {
                Some(suffix) => first.ends_with(suffix),
                None => pattern == first || pattern == source,
            }
        })
}

struct Image {
    /// Where the image's config lives (HUBGATE_CONFIG) and which repo file it ships there.
    config_path: String,
    shipped_config: String,
    binary: String,
    exposed: BTreeSet<u16>,
}

#[test]
fn the_dockerfile_builds_from_existing_files_and_runs_as_non_root() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "multi-stage: build, then a slim runtime");
    let runtime = stages.last().unwrap();
    let runtime_base = &runtime[0].args;
    assert!(
        !runtime_base.contains("rust:"),
        "the runtime stage is not the build image: {runtime_base}"
    );

    for stage in &stages {
        for copy in stage.iter().filter(|i| i.keyword == "COPY") {
            let (flags, sources, _) = copy_parts(&copy.args);
            if flags.iter().any(|f| f.starts_with("--from")) {
                continue;
            }
            for source in sources {
                assert!(
                    repo().join(source).exists(),
                    "Dockerfile copies {source}, which is not in the repository"
                );
                assert!(
                    !docker_ignores(source),
                    ".dockerignore keeps {source} out of the build context the Dockerfile copies it from"
                );
            }
        }
    }

    let users: Vec<&str> = runtime
        .iter()
        .filter(|i| i.keyword == "USER")
        .map(|i| i.args.as_str())
        .collect();
    let user = users.last().expect("the runtime stage sets USER");
    let name = user.split(':').next().unwrap();
    assert!(
        !matches!(name, "root" | "0" | ""),
        "the runtime stage runs as non-root, not {user:?}"
    );
}

fn image() -> Image {
    let stages = dockerfile_stages();
    let runtime = stages.last().unwrap();
    let env_config = runtime
        .iter()
        .filter(|i| i.keyword == "ENV")
        .find_map(|i| i.args.strip_prefix("HUBGATE_CONFIG="))
        .expect("the image sets HUBGATE_CONFIG")
        .to_string();
    let mut shipped_config = None;
    let mut binary = None;
    for copy in runtime.iter().filter(|i| i.keyword == "COPY") {
        let (flags, sources, destination) = copy_parts(&copy.args);
        if destination == env_config {
            shipped_config = Some(sources[0].to_string());
        }
        if flags.iter().any(|f| f.starts_with("--from")) && destination.ends_with("/hubgate") {
            binary = Some(destination.to_string());
        }
    }
    let exposed = runtime
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE a port"))
        .collect();
    Image {
        shipped_config: shipped_config
            .unwrap_or_else(|| panic!("the image ships a config at {env_config}")),
        config_path: env_config,
        binary: binary.expect("the runtime stage copies the hubgate binary from the build"),
        exposed,
    }
}

#[test]
fn the_image_exposes_its_configs_ports_and_checks_the_admin_healthz() {
    let image = image();
    let config = load_config(&image.shipped_config);
    let listen = port_of(&config.server.listen);
    let admin = port_of(&config.server.admin_listen);
    assert_eq!(
        image.exposed,
        BTreeSet::from([listen, admin]),
        "EXPOSE names the shipped config's listen and admin_listen ports"
    );
    assert!(
        config.server.listen.starts_with("0.0.0.0:"),
        "inside a container the proxy must accept outside connections"
    );

    let stages = dockerfile_stages();
    let runtime = stages.last().unwrap();
    let healthcheck = runtime
        .iter()
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("the image has a HEALTHCHECK");
    let command = healthcheck
        .args
        .split_once("CMD")
        .expect("HEALTHCHECK ... CMD")
        .1;
    let command = exec_form(command);
    assert_eq!(
        command[0], image.binary,
        "the check runs the hubgate binary"
    );
    assert_eq!(command[1], "healthcheck");
    // With no --url, `hubgate healthcheck` probes the config's admin_listen; if one is
    // given, it must be that same admin /healthz.
    let url = match command.iter().position(|a| a == "--url") {
        Some(i) => command[i + 1].clone(),
        None => hubgate::ops::admin::health_url(&config.server.admin_listen).unwrap(),
    };
    assert_eq!(url, format!("http://127.0.0.1:{admin}/healthz"));

    let entrypoint = runtime
        .iter()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("ENTRYPOINT");
    assert_eq!(exec_form(&entrypoint.args)[0], image.binary);
}

fn compose() -> Value {
    yaml_serde::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let service = &compose["services"][name];
    assert!(
        service.is_mapping(),
        "docker-compose.yml has a {name} service"
    );
    service
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => panic!("expected a string, got {other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A service's bind mounts as (repository path, container path).
fn mounts(service: &Value) -> Vec<(String, String)> {
    strings(&service["volumes"])
        .into_iter()
        .map(|volume| {
            let mut parts = volume.split(':');
            let source = parts.next().unwrap().to_string();
            let target = parts.next().expect("volume names a target").to_string();
            (source, target)
        })
        .collect()
}

/// The repository file a service mounts at `target`.
fn mounted_at(service: &Value, target: &str) -> String {
    mounts(service)
        .into_iter()
        .find(|(_, t)| t == target)
        .map(|(source, _)| source.trim_start_matches("./").to_string())
        .unwrap_or_else(|| panic!("nothing is mounted at {target}"))
}

/// A service's published ports as (host address, host port, container port).
fn published(service: &Value) -> Vec<(String, u16, u16)> {
    strings(&service["ports"])
        .into_iter()
        .map(|spec| {
            let parts: Vec<&str> = spec.split(':').collect();
            let port = |s: &str| s.trim_end_matches("/tcp").parse::<u16>().unwrap();
            match parts.as_slice() {
                [host, host_port, container] => {
                    (host.to_string(), port(host_port), port(container))
                }
                _ => panic!("publish ports as HOST_IP:HOST_PORT:CONTAINER_PORT, not {spec}"),
            }
        })
        .collect()
}

fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("{name} in {args:?}"));
    &args[i + 1]
}

#[test]
fn every_bind_mount_exists_and_every_published_port_stays_on_loopback() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    assert!(
        services.len() >= 5,
        "hubgate, sim, traffic, prometheus, grafana"
    );
    for (name, service) in services {
        for (source, target) in mounts(service) {
            assert!(
                source.starts_with("./"),
                "{name:?}: mount {source} from the repository (./...)"
            );
            assert!(
                repo().join(&source).exists(),
                "{name:?} mounts {source} at {target}, which is not in the repository"
            );
        }
        for (host, _, _) in published(service) {
            assert_eq!(
                host, "127.0.0.1",
                "{name:?} publishes on the host's loopback only"
            );
        }
    }
}

#[test]
fn compose_ports_agree_with_the_configs_each_service_loads() {
    let compose = compose();
    let image = image();
    let hubgate = service(&compose, "hubgate");
    let config_file = mounted_at(hubgate, &image.config_path);
    let config = load_config(&config_file);
    let (listen, admin) = (
        port_of(&config.server.listen),
        port_of(&config.server.admin_listen),
    );
    let container_ports: BTreeSet<u16> = published(hubgate).iter().map(|p| p.2).collect();
    assert_eq!(
        container_ports,
        BTreeSet::from([listen, admin]),
        "hubgate publishes the listen and admin ports of {config_file}"
    );
    assert_eq!(
        container_ports, image.exposed,
        "compose publishes what the image EXPOSEs"
    );

    // hubgate forwards to the simulator service, at the port it listens on.
    let sim = service(&compose, "sim");
    let sim_args = strings(&sim["command"]);
    assert_eq!(sim_args[0], "sim");
    let sim_listen = flag(&sim_args, "--listen");
    let upstream = config.upstream_target().unwrap();
    assert_eq!(
        upstream.host(),
        "sim",
        "[upstream] base_url names the sim service"
    );
    assert_eq!(
        upstream.authority.port_u16(),
        Some(port_of(sim_listen)),
        "[upstream] base_url uses the simulator's --listen port"
    );
    let sim_config = mounted_at(sim, flag(&sim_args, "--config"));
    SimConfig::from_toml_file(&repo().join(&sim_config))
        .unwrap_or_else(|e| panic!("{sim_config}: {e:#}"));
    let sim_check = strings(&sim["healthcheck"]["test"]);
    assert_eq!(
        flag(&sim_check, "--url"),
        format!("http://127.0.0.1:{}/__sim/health", port_of(sim_listen)),
        "the simulator's health check probes its own port"
    );

    // The demo traffic calls hubgate's proxy port.
    let traffic = service(&compose, "traffic");
    assert_eq!(
        traffic["environment"]["HUBGATE_URL"].as_str(),
        Some(format!("http://hubgate:{listen}").as_str())
    );
    assert_eq!(
        hubgate["depends_on"]["sim"]["condition"].as_str(),
        Some("service_healthy")
    );
}

#[test]
fn prometheus_scrapes_hubgates_admin_port_and_grafana_finds_both() {
    let compose = compose();
    let image = image();
    let config = load_config(&mounted_at(
        service(&compose, "hubgate"),
        &image.config_path,
    ));
    let admin = port_of(&config.server.admin_listen);

    let prometheus = service(&compose, "prometheus");
    let prometheus_config_file = mounted_at(prometheus, "/etc/prometheus/prometheus.yml");
    let prometheus_config: Value = yaml_serde::from_str(&read(&prometheus_config_file)).unwrap();
    let jobs = prometheus_config["scrape_configs"].as_sequence().unwrap();
    let hubgate_job = jobs
        .iter()
        .find(|j| j["job_name"].as_str() == Some("hubgate"))
        .expect("a scrape job named hubgate (the alerts select job=\"hubgate\")");
    let targets: Vec<String> = hubgate_job["static_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|c| strings(&c["targets"]))
        .collect();
    assert_eq!(
        targets,
        [format!("hubgate:{admin}")],
        "Prometheus scrapes the hubgate service's admin port"
    );
    assert_eq!(hubgate_job["metrics_path"].as_str(), Some("/metrics"));
    for rules in strings(&prometheus_config["rule_files"]) {
        let source = mounted_at(prometheus, &rules);
        assert!(repo().join(&source).is_file(), "{source}");
    }

    let grafana = service(&compose, "grafana");
    let datasources = mounts(grafana)
        .into_iter()
        .filter(|(_, target)| target.starts_with("/etc/grafana/provisioning/datasources"))
        .map(|(source, _)| source)
        .collect::<Vec<_>>();
    assert_eq!(datasources.len(), 1, "one datasource file");
    let datasource: Value = yaml_serde::from_str(&read(&datasources[0])).unwrap();
    // Prometheus listens on 9090 inside its container (its image's default).
    assert_eq!(
        datasource["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    assert!(
        published(prometheus).iter().all(|p| p.2 == 9090),
        "Prometheus is reached on its own port 9090"
    );

    let providers_dir = mounted_at(grafana, "/etc/grafana/provisioning/dashboards");
    let provider: Value =
        yaml_serde::from_str(&read(&format!("{providers_dir}/hubgate.yml"))).unwrap();
    let dashboards_path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let dashboards_dir = mounted_at(grafana, &dashboards_path);
    assert!(Path::new(&repo().join(&dashboards_dir).join("hubgate.json")).is_file());
    assert_eq!(
        grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str(),
        Some(format!("{dashboards_path}/hubgate.json").as_str()),
        "the home dashboard is the provisioned hubgate dashboard"
    );
}
