//! The real binary: bad config and model files are refused at start with the
//! field at fault, and the config the deploy/ files mount loads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn churn_alert(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_churn-alert"));
    c.args(args)
        .current_dir(root())
        .env_remove("CHURN_ALERT_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run churn-alert")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn yaml(path: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
}

/// The deploy config names the model where the image puts it; here the
/// same model is read from the repository.
fn shipped_model_override() -> (&'static str, String) {
    let cfg = churn_alert::config::Config::load_with_env(
        Some(&root().join("deploy/config/churn-alert.toml")),
        Vec::new(),
    )
    .unwrap();
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let copied = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("COPY models/ "))
        .expect("the image copies models/");
    assert_eq!(
        cfg.model.path,
        Path::new(copied.trim()).join("churn-model.json"),
        "the deploy config's model is where the image puts it"
    );
    (
        "CHURN_ALERT__MODEL__PATH",
        root().join("models/churn-model.json").display().to_string(),
    )
}

#[test]
fn deploy_config_loads_with_the_real_binary() {
    let (k, v) = shipped_model_override();
    let o = churn_alert(
        &["--config", "deploy/config/churn-alert.toml", "check-config"],
        &[(k, &v)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("config ok"));
}

#[test]
fn kubernetes_manifests_match_the_config_and_the_binary() {
    let cfg = churn_alert::config::Config::load_with_env(
        Some(&root().join("deploy/config/churn-alert.toml")),
        Vec::new(),
    )
    .unwrap();
    let port: u64 = cfg
        .admin
        .listen
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let sts = yaml("deploy/k8s/statefulset.yaml");
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(port));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // The config file is mounted where CHURN_ALERT_CONFIG points, under the
    // key the kustomization generates from deploy/config/churn-alert.toml.
    let env: Vec<(String, String)> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            // Values taken from the pod name get a sample StatefulSet pod name.
            // and values from a secret a sample secret.
            let value = match e["value"].as_str() {
                Some(v) => v.to_string(),
                None if e["valueFrom"]["secretKeyRef"].is_mapping() => {
                    "a-sample-admin-token-0123456789".to_string()
                }
                None => {
                    assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
                    "churn-alert-0".to_string()
                }
            };
            (e["name"].as_str().unwrap().to_string(), value)
        })
        .collect();
    let cfg_path = &env
        .iter()
        .find(|(k, _)| k == "CHURN_ALERT_CONFIG")
        .unwrap()
        .1;
    // The config is the image's: deploy/config/churn-alert.toml, copied
    // where CHURN_ALERT_CONFIG points.
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim() == format!("COPY deploy/config/churn-alert.toml {cfg_path}")),
        "the image does not put the deploy config at {cfg_path}"
    );
    // The state volume is where the config keeps sled.
    let state = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "state")
        .unwrap();
    assert!(cfg
        .store
        .path
        .starts_with(state["mountPath"].as_str().unwrap()));
    // The environment overrides in the manifest are keys the binary accepts.
    let mut overrides: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("CHURN_ALERT__"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(!overrides.is_empty());
    overrides.push(("CHURN_ALERT_CONFIG", "deploy/config/churn-alert.toml"));
    let (k, v) = shipped_model_override();
    overrides.push((k, &v));
    let o = churn_alert(&["check-config"], &overrides);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The restricted Pod Security Standard's settings of a pod spec and its
/// containers.
fn assert_restricted(pod: &serde_yaml::Value, what: &str) {
    let sc = &pod["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{what}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    let containers = pod["containers"].as_sequence().unwrap().iter();
    let init = pod["initContainers"].as_sequence().into_iter().flatten();
    for c in containers.chain(init) {
        let name = c["name"].as_str().unwrap();
        let csc = &c["securityContext"];
        assert_eq!(csc["allowPrivilegeEscalation"], false, "{what} {name}");
        assert_eq!(csc["readOnlyRootFilesystem"], true, "{what} {name}");
        assert_eq!(csc["capabilities"]["drop"][0], "ALL", "{what} {name}");
        // A read-only root needs a writable /tmp.
        if name != "seed-model" {
            assert!(
                c["volumeMounts"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|m| m["mountPath"] == "/tmp"),
                "{what} {name}: no /tmp"
            );
        }
    }
}

/// The Kubernetes base is hardened and operable: a disruption budget, the
/// restricted security context, the admin port open only to monitoring and
/// a ServiceMonitor on the admin port; the overlay deploy/k8s-retrain puts
/// the model on a shared volume where the retraining CronJob writes the
/// file the pods read.
#[test]
fn kubernetes_manifests_are_hardened_and_take_the_model_from_a_volume() {
    let kust = yaml("deploy/k8s/kustomization.yaml");
    let resources: Vec<&str> = kust["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for f in ["pdb.yaml", "networkpolicy.yaml"] {
        assert!(resources.contains(&f), "{f} not in the kustomization");
    }
    let sts = yaml("deploy/k8s/statefulset.yaml");
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    let pod = &sts["spec"]["template"]["spec"];
    assert_restricted(pod, "statefulset");

    let pdb = yaml("deploy/k8s/pdb.yaml");
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        &pdb["spec"]["selector"]["matchLabels"]["app"],
        &labels["app"]
    );

    let admin_port = pod["containers"][0]["ports"][0]["containerPort"].clone();
    let np = yaml("deploy/k8s/networkpolicy.yaml");
    assert_eq!(np["kind"], "NetworkPolicy");
    assert_eq!(
        &np["spec"]["podSelector"]["matchLabels"]["app"],
        &labels["app"]
    );
    let ingress = np["spec"]["ingress"].as_sequence().unwrap();
    assert_eq!(ingress.len(), 1, "one rule: monitoring to the admin port");
    assert_eq!(ingress[0]["ports"][0]["port"], admin_port);
    assert!(ingress[0]["from"][0]["namespaceSelector"].is_mapping());

    let sm = yaml("deploy/k8s/monitoring/servicemonitor.yaml");
    let svc = yaml("deploy/k8s/service.yaml");
    assert_eq!(sm["kind"], "ServiceMonitor");
    assert_eq!(
        &sm["spec"]["selector"]["matchLabels"]["app"],
        &svc["metadata"]["labels"]["app"]
    );
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");

    // The overlay with retraining: the model read from a shared volume
    // (read-only), seeded there from the image, written there by the
    // CronJob, which runs the same image.
    let overlay = yaml("deploy/k8s-retrain/kustomization.yaml");
    let res: Vec<&str> = overlay["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(res, ["../k8s", "models-pvc.yaml", "cronjob.yaml"]);
    assert_eq!(
        overlay["images"], kust["images"],
        "training and serving run the same image"
    );
    let patch_file = overlay["patches"][0]["path"].as_str().unwrap();
    let patch = yaml(&format!("deploy/k8s-retrain/{patch_file}"));
    assert_eq!(patch["metadata"]["name"], sts["metadata"]["name"]);
    let pod = &patch["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["name"],
        sts["spec"]["template"]["spec"]["containers"][0]["name"]
    );
    let model_path = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "CHURN_ALERT__MODEL__PATH")
        .expect("the model path is set")["value"]
        .as_str()
        .unwrap()
        .to_string();
    let mount_of = |c: &serde_yaml::Value, volume: &str| -> serde_yaml::Value {
        c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("no {volume} mount"))
            .clone()
    };
    let models = mount_of(c, "models");
    assert_eq!(models["readOnly"], true);
    let (dir, file) = model_path.rsplit_once('/').unwrap();
    assert_eq!(models["mountPath"], dir);
    let claim = |pod: &serde_yaml::Value| -> String {
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "models")
            .unwrap()["persistentVolumeClaim"]["claimName"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let pvc = yaml("deploy/k8s-retrain/models-pvc.yaml");
    assert_eq!(claim(pod), pvc["metadata"]["name"].as_str().unwrap());
    assert_eq!(pvc["spec"]["accessModes"][0], "ReadWriteMany");
    let seed = &pod["initContainers"][0];
    let seed_dir = mount_of(seed, "models")["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    let script = seed["args"][0].as_str().unwrap();
    assert!(script.contains(&format!("{seed_dir}/{file}")), "{script}");
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let copied = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("COPY models/ "))
        .unwrap()
        .trim()
        .trim_end_matches('/');
    assert!(script.contains(&format!("{copied}/{file}")), "{script}");
    let csc = &seed["securityContext"];
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["capabilities"]["drop"][0], "ALL");

    let cron = yaml("deploy/k8s-retrain/cronjob.yaml");
    assert_eq!(cron["kind"], "CronJob");
    let job = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_restricted(job, "cronjob");
    assert_eq!(claim(job), claim(pod));
    let train = &job["containers"][0];
    assert_eq!(
        train["image"],
        sts["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    let train_dir = mount_of(train, "models")["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    let cmd = train["args"][0].as_str().unwrap();
    assert!(cmd.starts_with("churn-alert train "), "{cmd}");
    assert!(cmd.contains(&format!("--out {train_dir}/{file}")), "{cmd}");
    // The train command's flags are the binary's.
    let help = churn_alert(&["train", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in cmd.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")),
            "{flag} is not a train flag"
        );
    }
}

/// `kubectl kustomize` builds the base and the overlay as written (kustomize
/// refuses files outside a kustomization's folder and overlays inside their
/// base); the overlay's StatefulSet keeps the base's state volume and gains
/// the model volume. Skipped, and said so, where kubectl is not installed.
#[test]
fn kustomize_builds_the_base_and_the_retraining_overlay() {
    let Ok(out) = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
    else {
        eprintln!("kubectl is not installed here: the kustomize build is not checked");
        return;
    };
    assert!(out.status.success());
    let build = |dir: &str| -> Vec<serde_yaml::Value> {
        let o = Command::new("kubectl")
            .args(["kustomize", dir])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "kubectl kustomize {dir}: {}",
            stderr(&o)
        );
        let text = String::from_utf8(o.stdout).unwrap();
        text.split("\n---\n")
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect()
    };
    let base = build("deploy/k8s");
    let kinds: Vec<&str> = base.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for k in [
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(&k), "{k} not in the base: {kinds:?}");
    }
    let overlay = build("deploy/k8s-retrain");
    let sts = overlay.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for m in ["state", "tmp", "models"] {
        assert!(mounts.contains(&m), "{m} not mounted: {mounts:?}");
    }
    let cron = overlay.iter().find(|d| d["kind"] == "CronJob").unwrap();
    assert_eq!(
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
        c["image"],
        "training and serving run the same image"
    );
}

/// The image build: a context without target/ and .git, cached
/// dependencies, and a binary without debug info.
#[test]
fn the_image_build_is_lean_and_cached() {
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for dir in ["target/", ".git/"] {
        assert!(ignore.lines().any(|l| l.trim() == dir), "{dir} not ignored");
    }
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("--mount=type=cache,target=/src/target"));
    assert!(dockerfile.contains("CARGO_PROFILE_RELEASE_STRIP=symbols"));
    assert!(dockerfile.contains("CARGO_PROFILE_RELEASE_DEBUG=0"));
    // Numeric, so that Kubernetes' runAsNonRoot can check it.
    assert!(dockerfile.lines().any(|l| l.trim() == "USER 10001:10001"));
}

/// The autoscaling example scales this StatefulSet on the lag of the
/// group and topic the deploy config consumes, never beyond the partitions
/// compose creates.
#[test]
fn autoscaling_example_targets_the_statefulset_and_its_consumer_group() {
    let cfg = churn_alert::config::Config::load_with_env(
        Some(&root().join("deploy/config/churn-alert.toml")),
        Vec::new(),
    )
    .unwrap();
    let sts = yaml("deploy/k8s/statefulset.yaml");
    let keda = yaml("deploy/k8s/autoscaling/keda-scaledobject.yaml");
    assert_eq!(keda["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
    assert_eq!(
        keda["spec"]["scaleTargetRef"]["name"],
        sts["metadata"]["name"]
    );
    let t = &keda["spec"]["triggers"][0];
    assert_eq!(t["type"], "kafka");
    assert_eq!(t["metadata"]["consumerGroup"], cfg.kafka.group_id.as_str());
    assert_eq!(t["metadata"]["topic"], cfg.kafka.input_topic.as_str());
    assert_eq!(
        t["metadata"]["bootstrapServers"],
        cfg.kafka.brokers.as_str()
    );
    let compose = std::fs::read_to_string(root().join("deploy/docker-compose.yml")).unwrap();
    let partitions: u64 = compose
        .split("--partitions ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let max = keda["spec"]["maxReplicaCount"].as_u64().unwrap();
    assert!(
        max <= partitions,
        "{max} replicas for {partitions} partitions"
    );
    assert!(sts["spec"]["replicas"].as_u64().unwrap() <= max);
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    assert!(compose.contains(&format!("--topic {} ", cfg.kafka.changelog_topic)));
    assert!(compose.contains("cleanup.policy=compact"));
}

#[test]
fn compose_mounts_the_same_config() {
    let compose = yaml("deploy/docker-compose.yml");
    let svc = &compose["services"]["churn-alert"];
    let cfg_path = svc["environment"]["CHURN_ALERT_CONFIG"].as_str().unwrap();
    assert!(svc["environment"]["CHURN_ALERT__KAFKA__INSTANCE_ID"].is_string());
    let mounted = svc["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .find(|v| v.split(':').nth(1) == Some(cfg_path))
        .expect("config mounted at CHURN_ALERT_CONFIG");
    let src = mounted.split(':').next().unwrap();
    assert!(root().join("deploy").join(src).is_file());
}

/// `docker compose up` shows alerts on a dashboard: a producer of
/// simulated events from the same image, and Grafana provisioned with the
/// compose Prometheus and the dashboard.
#[test]
fn compose_has_a_producer_and_grafana_with_the_dashboard() {
    let compose = yaml("deploy/docker-compose.yml");
    let services = &compose["services"];
    let image = services["churn-alert"]["image"].as_str().unwrap();
    let events = &services["events"];
    assert_eq!(events["image"], image, "the producer runs the built image");
    let script = events["command"][0].as_str().unwrap();
    let sim = churn_alert(&["simulate", "--help"], &[]);
    let sim = String::from_utf8_lossy(&sim.stdout).to_string();
    let prod = churn_alert(&["produce", "--help"], &[]);
    let prod = String::from_utf8_lossy(&prod.stdout).to_string();
    let mut out_dir = None;
    for cmd in script.split("&&") {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(words[0], "churn-alert", "{cmd}");
        let help = match words[1] {
            "simulate" => &sim,
            "produce" => &prod,
            other => panic!("unexpected command {other}"),
        };
        for w in words.iter().filter(|w| w.starts_with("--")) {
            assert!(help.contains(*w), "{w} is not a flag of {}", words[1]);
        }
        if let Some(i) = words.iter().position(|w| *w == "--out") {
            out_dir = Some(words[i + 1].to_string());
        }
        if words[1] == "produce" {
            let i = words.iter().position(|w| *w == "--events").unwrap();
            assert_eq!(
                Some(words[i + 1].to_string()),
                out_dir.as_ref().map(|d| format!("{d}/events.jsonl")),
                "produce sends what simulate wrote"
            );
        }
    }
    let grafana = &services["grafana"];
    let mounts: Vec<(String, String)> = grafana["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| {
            let mut p = v.as_str().unwrap().split(':');
            (p.next().unwrap().to_string(), p.next().unwrap().to_string())
        })
        .collect();
    let target_of = |src: &str| {
        mounts
            .iter()
            .find(|(s, _)| s == src)
            .unwrap_or_else(|| panic!("{src} not mounted"))
            .1
            .clone()
    };
    assert_eq!(
        target_of("./grafana/provisioning"),
        "/etc/grafana/provisioning"
    );
    let dash_target = target_of("./grafana/churn-alert-dashboard.json");
    let provider = yaml("deploy/grafana/provisioning/dashboards/churn-alert.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        dash_target.starts_with(&format!("{path}/")),
        "{dash_target} not under {path}"
    );
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(ds["datasources"][0]["type"], "prometheus");
    let prom_port = services["prometheus"]["ports"][0]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        ds["datasources"][0]["url"],
        format!("http://prometheus:{prom_port}")
    );
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[kafka]\nbrokers = \"127.0.0.1:9\"\nbatch_max_mesages = 5\n",
    )
    .unwrap();
    let o = churn_alert(&["--config", p.to_str().unwrap(), "check-config"], &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("kafka.batch_max_mesages"),
        "{}",
        stderr(&o)
    );

    let o = churn_alert(
        &["check-config"],
        &[("CHURN_ALERT__POLICY__ENTER_THRESHOLD", "2")],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("policy.enter_threshold"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn model_that_does_not_match_the_features_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.json");
    let mut m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/churn-model.json")).unwrap(),
    )
    .unwrap();
    m["features"][3] = "shoe_size".into();
    std::fs::write(&model, m.to_string()).unwrap();
    let state = dir.path().join("state");
    let o = churn_alert(
        &["run"],
        &[
            ("CHURN_ALERT__MODEL__PATH", model.to_str().unwrap()),
            ("CHURN_ALERT__STORE__PATH", state.to_str().unwrap()),
            ("CHURN_ALERT__KAFKA__BROKERS", "127.0.0.1:9"),
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("features[3]") && err.contains("shoe_size"),
        "{err}"
    );
    assert!(!Path::new(&state).exists(), "refused before touching state");
}

/// Every `churn_alert_*` metric a query uses, histogram suffixes removed.
fn metric_names_in(query: &str, histograms: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = query;
    while let Some(i) = rest.find("churn_alert_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let mut name = tail[..end].to_string();
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if histograms.iter().any(|h| h == base) {
                    name = base.to_string();
                }
            }
        }
        out.push(name);
        rest = &tail[end..];
    }
    out
}

#[test]
fn dashboard_and_alert_rules_query_metrics_the_service_exports() {
    let metrics = churn_alert::telemetry::metrics::Metrics::new();
    let exported = metrics.names();
    let histograms: Vec<String> = [
        "churn_alert_batch_duration_seconds",
        "churn_alert_processing_latency_seconds",
        "churn_alert_score_ratio",
    ]
    .map(String::from)
    .to_vec();
    for h in &histograms {
        assert!(exported.contains(h), "{h} is not exported");
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/churn-alert-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queries: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(queries.len() >= 10, "{} dashboard queries", queries.len());
    let rules = yaml("deploy/prometheus-rules.yml");
    let rules = rules["groups"][0]["rules"].as_sequence().unwrap().clone();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for want in [
        "ChurnAlertConsumerLagGrowing",
        "ChurnAlertDeadLetterRateHigh",
        "ChurnAlertNoEvents",
        "ChurnAlertAlertRateAnomaly",
        "ChurnAlertModelReloadFailed",
    ] {
        assert!(names.contains(&want), "no alert rule {want}");
    }
    // Rules that must fire while the service's own metrics are gone read
    // Prometheus' `up` of the scrape job.
    let prom = yaml("deploy/prometheus.yml");
    let job = prom["scrape_configs"][0]["job_name"].as_str().unwrap();
    let svc = yaml("deploy/k8s/service.yaml");
    assert_eq!(
        svc["metadata"]["name"], job,
        "the ServiceMonitor's job is the Service's name"
    );
    let up = format!("up{{job=\"{job}\"}}");
    let expr_of = |name: &str| {
        rules
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("no alert rule {name}"))["expr"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(expr_of("ChurnAlertDown"), format!("{up} == 0"));
    assert_eq!(expr_of("ChurnAlertAbsent"), format!("absent({up} == 1)"));
    // Every rule links its runbook, a section of docs/runbooks.md.
    let runbooks = std::fs::read_to_string(root().join("docs/runbooks.md")).unwrap();
    for r in &rules {
        let name = r["alert"].as_str().unwrap();
        let url = r["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        assert_eq!(url, format!("docs/runbooks.md#{}", name.to_lowercase()));
        assert!(
            runbooks.lines().any(|l| l == format!("## {name}")),
            "no runbook section for {name}"
        );
    }
    queries.extend(
        rules
            .iter()
            .map(|r| r["expr"].as_str().unwrap().to_string())
            .filter(|q| !q.contains(&up)),
    );
    for q in &queries {
        let used = metric_names_in(q, &histograms);
        assert!(!used.is_empty(), "query uses no churn-alert metric: {q}");
        for m in used {
            assert!(
                exported.contains(&m),
                "{m} (in `{q}`) is not a metric the service exports"
            );
        }
    }
    // Prometheus in compose loads the rules.
    let rule_file = prom["rule_files"][0].as_str().unwrap();
    let compose = std::fs::read_to_string(root().join("deploy/docker-compose.yml")).unwrap();
    assert!(compose.contains(&format!("./prometheus-rules.yml:{rule_file}:ro")));
}

/// `churn-alert check-config | head -0`: the reader is gone before the
/// command prints. The command ends quietly (SIGPIPE, or success when it
/// printed first), never with a panic.
#[test]
fn a_closed_stdout_pipe_ends_a_command_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_churn-alert"))
        .arg("check-config")
        .current_dir(root())
        .env_remove("CHURN_ALERT_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run churn-alert");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "{:?}: {err}",
        out.status
    );
}

/// `score --as-of` before the history starts is refused with a non-zero
/// exit that says why, not "scored 0 customers".
#[test]
fn score_before_the_history_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"event_id":"e1","customer_id":"c-1","type":"session","occurred_at":"2026-03-01T10:00:00Z"}"#,
            "\n",
            r#"{"event_id":"e2","customer_id":"c-2","type":"session","occurred_at":"2026-03-02T10:00:00Z"}"#,
            "\n",
        ),
    )
    .unwrap();
    let ev = events.to_str().unwrap();
    let out = churn_alert(&["score", "--events", ev, "--as-of", "2020-01-01"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no valid event at or before --as-of")
            && err.contains("2 valid events after it"),
        "{err}"
    );
    let ok = churn_alert(&["score", "--events", ev, "--as-of", "2026-04-01"], &[]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("c-2,"));
}

/// Logs written to a pipe or file carry no terminal colour codes.
#[test]
fn redirected_logs_have_no_colour_codes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_churn-alert"))
        .arg("run")
        .current_dir(root())
        .env_remove("CHURN_ALERT_CONFIG")
        .env("CHURN_ALERT__STORE__PATH", dir.path().join("state"))
        .env("CHURN_ALERT__KAFKA__BROKERS", "127.0.0.1:9")
        .env("CHURN_ALERT__ADMIN__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run churn-alert");
    let stderr = child.stderr.take().unwrap();
    // The first info line (the admin server listening) comes at start.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        let done = line.contains("admin server listening");
        seen.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.iter().any(|l| l.contains("admin server listening")),
        "no start-up log line: {seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "colour codes in redirected logs: {seen:?}"
    );
}

#[test]
fn a_bare_command_prints_help_and_run_is_explicit() {
    let o = churn_alert(&[], &[]);
    assert_eq!(o.status.code(), Some(2), "usage");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(text.contains("Usage:") && text.contains("  run "), "{text}");
    assert!(text.contains("Exit codes:"), "{text}");
}

#[test]
fn failures_exit_with_their_documented_code_and_say_the_cause_once() {
    // A config file that is not there: 2, and the OS error once.
    let o = churn_alert(&["--config", "/nonexistent/c.toml", "check-config"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert!(err.contains("/nonexistent/c.toml"), "{err}");
    // A flag value the command cannot use: 2.
    let o = churn_alert(
        &["score", "--events", "x.jsonl", "--as-of", "yesterday"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("\"yesterday\""), "{}", stderr(&o));
    // A model file that is not there: 2, naming it.
    let o = churn_alert(
        &["check-config"],
        &[("CHURN_ALERT__MODEL__PATH", "/nonexistent/m.json")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).matches("os error 2").count(),
        1,
        "{}",
        stderr(&o)
    );
}

/// Kafka client settings librdkafka refuses stop `run` at once with exit
/// code 2 and the key (they used to be retried every 2 s, forever), and
/// `check-config` finds them too.
#[test]
fn refused_client_settings_stop_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        "[store]\npath = \"state\"\n[kafka]\nbrokers = \"127.0.0.1:9\"\n[kafka.client_properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"certs/missing-ca.pem\"\n",
    )
    .unwrap();
    let model = root().join("models/churn-model.json");
    let env = [
        ("CHURN_ALERT__MODEL__PATH", model.to_str().unwrap()),
        ("CHURN_ALERT__ADMIN__LISTEN", "127.0.0.1:0"),
    ];
    for cmd in ["check-config", "run"] {
        let o = churn_alert(&["--config", p.to_str().unwrap(), cmd], &env);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("kafka.client_properties.\"ssl.ca.location\""),
            "{cmd}: {err}"
        );
        // The relative CA path was read beside the config file.
        assert!(
            err.contains(
                &dir.path()
                    .join("certs/missing-ca.pem")
                    .display()
                    .to_string()
            ),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn the_effective_config_prints_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        "[model]\npath = \"m/model.json\"\n[kafka]\nbrokers = \"pkc-1.example:9092\"\n[kafka.client_properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"API_KEY\"\n\"sasl.password\" = \"not-to-be-printed\"\n",
    )
    .unwrap();
    let o = churn_alert(
        &["--config", p.to_str().unwrap(), "config"],
        &[("CHURN_ALERT__ADMIN__TOKEN", "also-not-to-be-printed")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("not-to-be-printed"), "{out}");
    assert!(out.contains("\"sasl.username\" = \"API_KEY\""), "{out}");
    assert!(out.contains("brokers = \"pkc-1.example:9092\""), "{out}");
    assert!(out.contains("token = \"***\""), "{out}");
    // Paths in the file are relative to it.
    let model = dir.path().join("m/model.json");
    assert!(
        out.contains(&format!("path = \"{}\"", model.display())),
        "{out}"
    );
}

/// The SASL_SSL example (Confluent Cloud style) of docs/configuration.md,
/// "Connecting to your cluster", is accepted by `check-config` as written,
/// and the same without its password is refused naming the key.
#[test]
fn the_configuration_docs_sasl_ssl_example_passes_check_config() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let section = &doc[doc
        .find("\n## Connecting to your cluster\n")
        .expect("section")..];
    let start = section.find("```toml\n").expect("toml block") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    assert!(
        example.contains("\"security.protocol\" = \"SASL_SSL\""),
        "{example}"
    );
    assert!(example.contains("[schema_registry]"), "{example}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cloud.toml");
    std::fs::write(&p, example).unwrap();
    let o = churn_alert(&["--config", p.to_str().unwrap(), "check-config"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let without: String = example
        .lines()
        .filter(|l| !l.starts_with("\"sasl.password\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&p, without).unwrap();
    let o = churn_alert(&["--config", p.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("kafka.client_properties.\"sasl.password\""),
        "{}",
        stderr(&o)
    );
}

/// `simulate` and `train` draw progress bars at a terminal (a pty from
/// util-linux's `script`) and write no bar's control codes when stderr is
/// redirected.
#[test]
fn progress_bars_at_a_terminal_plain_lines_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("hist");
    let bin = env!("CARGO_BIN_EXE_churn-alert");
    let sim = format!(
        "{bin} simulate --customers 1000 --days 240 --end 2026-09-01 --seed 5 --out {}",
        hist.display()
    );
    let train = format!(
        "{bin} train --events {} --as-of 2026-09-01 --out {}",
        hist.join("events.jsonl").display(),
        dir.path().join("model.json").display()
    );
    // Redirected: no bar, no carriage returns, no escape codes.
    for cmd in [&sim, &train] {
        let out = Command::new("sh")
            .args(["-c", cmd])
            .current_dir(root())
            .env_remove("CHURN_ALERT_CONFIG")
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "{cmd}: {err}");
        assert!(
            !err.contains('\u{1b}') && !err.contains('\r'),
            "control codes in redirected output of {cmd}: {err:?}"
        );
    }
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("util-linux's script is not installed: the terminal half is not checked");
        return;
    }
    for (cmd, bar) in [(&sim, "simulating"), (&train, "replaying")] {
        let out = Command::new("script")
            .args(["-q", "-e", "-c", &format!("{cmd} >/dev/null"), "/dev/null"])
            .current_dir(root())
            .env_remove("CHURN_ALERT_CONFIG")
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd}: {shown}");
        assert!(
            shown.contains(bar) && shown.contains('\u{1b}'),
            "no {bar} bar at a terminal: {shown:?}"
        );
    }
}
