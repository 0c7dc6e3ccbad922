//! Configuration: embedded defaults < TOML file < environment.
//!
//! Environment variables `CHURN_ALERT__SECTION__KEY=value` override file
//! values (`CHURN_ALERT__KAFKA__BROKERS=host:9092`). Unknown keys and bad
//! values are refused at start with the key's full path. Every field's
//! documentation is the user reference (docs/configuration.md).

/// The checks serde cannot make.
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::kafka::settings::{KafkaConfig, OffsetReset, Partitioner};
use crate::pipeline::decode::Validator;
pub use crate::pipeline::event::ClockMode;
use crate::pipeline::event::{Millis, DAY_MS};
use crate::pipeline::features::FeatureSpec;
use crate::pipeline::model::ModelFile;
use crate::pipeline::policy::Policy;
pub use crate::pipeline::settings::{PolicyConfig, SegmentsConfig, DEFAULT_ENTER, DEFAULT_EXIT};
pub use crate::registry::RegistryConfig;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "CHURN_ALERT__";

/// A refused configuration, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

impl crate::pipeline::error::Classify for ConfigError {
    /// A config is the operator's to fix.
    fn class(&self) -> crate::pipeline::error::ErrorClass {
        crate::pipeline::error::ErrorClass::Config
    }
}

pub(crate) fn key_err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    /// Schemas of messages in Confluent's Schema Registry wire format.
    pub schema_registry: RegistryConfig,
    pub store: StoreConfig,
    pub clock: ClockConfig,
    pub features: FeaturesConfig,
    pub validation: ValidationConfig,
    pub model: ModelConfig,
    pub policy: PolicyConfig,
    pub segments: SegmentsConfig,
    /// How experiment results are judged (`GET /experiments`,
    /// `churn-alert experiments`).
    pub experiments: crate::pipeline::readout::ReadoutSettings,
    /// How alerts, triggers and outcomes are encoded: JSON, or Avro / JSON
    /// Schema in the Schema Registry's wire format.
    pub outputs: crate::pipeline::output_format::OutputsConfig,
    pub admin: AdminConfig,
    pub service: ServiceConfig,
    pub log: LogConfig,
    /// The file this was loaded from (re-read by `POST /policy/reload`).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// Where state is kept.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sled` (on disk, survives restarts), `fjall` (on disk, an LSM tree:
    /// smaller on disk) or `memory` (for tests: lost on
    /// exit, so offsets are not committed to Kafka and each start replays
    /// from `kafka.auto_offset_reset`).
    pub engine: StoreEngine,
    /// Directory of the database (sled or fjall).
    pub path: PathBuf,
    /// The engine's background flush interval in milliseconds: how much of the
    /// latest committed work a crash can take back. Offsets are stored with
    /// the state, so that work is replayed from Kafka, not lost.
    pub flush_every_ms: u64,
    /// Flush (fsync) the engine after every committed batch, so a commit is
    /// durable before the next batch is fetched. Off: durable at the next
    /// background flush; a crash then replays up to `flush_every_ms` of work.
    pub flush_on_commit: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            engine: StoreEngine::Sled,
            path: PathBuf::from("data/state"),
            flush_every_ms: 500,
            flush_on_commit: true,
        }
    }
}

/// Which store engine keeps the state.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreEngine {
    /// On disk: survives restarts. The default.
    Sled,
    /// On disk in fjall, an LSM tree: survives restarts, smaller on disk.
    Fjall,
    /// In memory: lost on restart (tests, demos).
    Memory,
}

/// How log lines are written.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// Which clock drives scoring and the silence sweep.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    /// `wall`: live mode, now is the wall clock. `event`: replay mode, now is
    /// the partition's event-time watermark (largest event time applied).
    pub mode: ClockMode,
    /// How often, in milliseconds, silent customers that are due get re-scored.
    pub sweep_interval_ms: u64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            mode: ClockMode::Wall,
            sweep_interval_ms: 1000,
        }
    }
}

/// Feature definitions (changing them changes the model's inputs).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesConfig {
    /// Half-lives, in days, of the decayed activity rates; trends compare the shortest with the longest.
    pub half_lives_days: Vec<f64>,
    /// `activity` event names that become features of their own; other names are counted together as `activity_other`.
    pub activity_names: Vec<String>,
    /// Event-time window, in days, within which a repeated `event_id` is recognised as a duplicate. Events older than this behind the customer's newest event go to the dead-letter topic as `too_late`.
    pub dedup_window_days: f64,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        Self {
            half_lives_days: vec![7.0, 30.0, 90.0],
            activity_names: vec!["login".into()],
            dedup_window_days: 7.0,
        }
    }
}

/// Input validation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// ISO 4217 code every amount is converted to.
    pub base_currency: String,
    /// Units of base currency per unit of each other currency.
    pub currency_rates: BTreeMap<String, f64>,
    /// How far, in seconds, an event's time may be ahead of the wall clock.
    pub max_future_skew_seconds: u64,
    /// Largest accepted message, in bytes.
    pub max_message_bytes: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            base_currency: "EUR".into(),
            currency_rates: BTreeMap::from([
                ("USD".to_string(), 0.92),
                ("GBP".to_string(), 1.17),
                ("CHF".to_string(), 1.05),
            ]),
            max_future_skew_seconds: 300,
            max_message_bytes: 64 * 1024,
        }
    }
}

/// The churn model.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model JSON file (written by `churn-alert train`).
    pub path: PathBuf,
    /// How often, in seconds, the running service checks the file for a new
    /// model (0: only on SIGHUP).
    pub reload_check_seconds: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("models/churn-model.json"),
            reload_check_seconds: 10.0,
        }
    }
}

/// The admin HTTP server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz` and the operator
    /// endpoints.
    pub listen: String,
    /// Bearer token for reading customers (`GET /customers/{id}`: personal
    /// data), at least 16 characters; the admin token is accepted too. Best
    /// set by `CHURN_ALERT__ADMIN__READ_TOKEN`. With neither set, that
    /// endpoint answers 401: personal data is never open to whoever reaches
    /// the admin port (the port Prometheus scrapes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_token: Option<String>,
    /// Bearer token for the mutating endpoints (`DELETE /customers/{id}`,
    /// `POST /model/reload`, `POST /policy/reload`), at least 16
    /// characters; best set by `CHURN_ALERT__ADMIN__TOKEN`. Unset: those
    /// endpoints are disabled (403).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// How the other instances reach this admin server, e.g.
    /// `http://churn-alert-0.churn-alert:9898` (a StatefulSet pod's DNS
    /// name). Shown to the group as this instance's client id, so that
    /// `GET /customers/{id}` on any instance can name the owner's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_url: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9898".into(),
            read_token: None,
            token: None,
            advertised_url: None,
        }
    }
}

/// The running service's own limits.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// After a stop signal, the longest wait for the batch in hand to be
    /// committed and the clients to close; then the process exits anyway.
    /// That is safe: offsets are stored with the state, so work not
    /// committed is replayed by the next start (outputs are at least once).
    pub stop_timeout_seconds: u64,
    /// `/healthz` fails when the processing loop has had a batch in hand
    /// for this long without committing it (e.g. a dependency failing for
    /// good, or a loop that is stuck), so that an orchestrator restarts the
    /// instance. 0: `/healthz` always answers ok.
    pub stall_seconds: u64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            stop_timeout_seconds: 30,
            stall_seconds: 300,
        }
    }
}

/// Logging (the filter comes from `RUST_LOG`, default `info`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// Where spans go by OTLP over HTTP (protobuf), the full traces URL,
    /// e.g. `http://otel-collector:4318/v1/traces`; unset: no export. The
    /// service name is `churn-alert` unless `OTEL_SERVICE_NAME` says.
    pub otlp_endpoint: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            otlp_endpoint: None,
        }
    }
}

fn days_ms(d: f64) -> Millis {
    (d * DAY_MS as f64) as Millis
}

impl Config {
    /// Loads defaults, then `path` if given, then the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        // Start from the defaults so overrides know each key's type.
        let mut table = match toml::Value::try_from(Config::default()) {
            Ok(toml::Value::Table(t)) => t,
            _ => unreachable!("the default config serialises to a table"),
        };
        let file = match path {
            None => toml::Table::new(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                let mut t = text
                    .parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        path: p.display().to_string(),
                        message: e.to_string(),
                    })?;
                resolve_paths(&mut t, p.parent().unwrap_or(Path::new("")));
                t
            }
        };
        merge(&mut table, file);
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort();
        for (k, v) in overrides {
            apply_env(&mut table, &k, &v)?;
        }
        read_secret_files(&mut table)?;
        let mut cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let msg = e.into_inner().to_string();
                key_err(&path, msg.lines().next().unwrap_or_default())
            })?;
        // An empty token (e.g. an unset variable in compose) is no token.
        if cfg.admin.token.as_deref() == Some("") {
            cfg.admin.token = None;
        }
        cfg.validate()?;
        cfg.source = path.map(Path::to_path_buf);
        Ok(cfg)
    }

    /// The effective config as TOML, with every secret (tokens, passwords,
    /// keys) replaced by `"***"`, for `churn-alert config`.
    pub fn masked_toml(&self) -> String {
        let mut v = toml::Value::try_from(self).expect("the config serialises");
        mask_secrets(&mut v);
        toml::to_string_pretty(&v).expect("a TOML table prints")
    }

    /// The feature spec these settings define.
    pub fn feature_spec(&self) -> FeatureSpec {
        let mut spec = FeatureSpec::new(
            &self.features.half_lives_days,
            &self.features.activity_names,
            days_ms(self.features.dedup_window_days),
        );
        spec.return_gap_ms = days_ms(self.segments.churned_after_days);
        spec
    }

    /// The validator these settings define.
    pub fn validator(&self) -> Validator {
        Validator {
            base_currency: self.validation.base_currency.clone(),
            rates: self
                .validation
                .currency_rates
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            max_future_skew_ms: self.validation.max_future_skew_seconds as Millis * 1000,
            max_message_bytes: self.validation.max_message_bytes,
        }
    }

    /// The alert policy without a model: configured or default thresholds.
    pub fn policy(&self) -> Policy {
        self.policy_for(None)
    }

    /// The alert policy for a model: the config's thresholds if it sets
    /// any, else the model's, else the defaults.
    pub fn policy_for(&self, model: Option<&ModelFile>) -> Policy {
        self.policy.build(&self.segments, model)
    }
}

use crate::kafka::settings::is_secret;

fn mask_secrets(v: &mut toml::Value) {
    if let toml::Value::Table(t) = v {
        for (k, v) in t.iter_mut() {
            if is_secret(k) && v.is_str() {
                *v = toml::Value::String("***".into());
            } else {
                mask_secrets(v);
            }
        }
    }
}

/// Makes the relative paths a config file sets relative to that file's
/// directory, not the working directory: `store.path`, `model.path`,
/// `schema_registry.dir` and `.ca_location`, and the librdkafka file
/// properties (`ssl.*.location`,
/// `sasl.kerberos.keytab`). Defaults and environment overrides stay
/// relative to the working directory.
fn resolve_paths(file: &mut toml::Table, dir: &Path) {
    let resolve = |v: &mut toml::Value| {
        if let toml::Value::String(p) = v {
            // `probe`: librdkafka's search of the system's CA paths.
            if !p.is_empty() && p != "probe" && Path::new(p.as_str()).is_relative() {
                *p = dir.join(p.as_str()).display().to_string();
            }
        }
    };
    for (section, key) in [
        ("store", "path"),
        ("model", "path"),
        ("schema_registry", "dir"),
        ("schema_registry", "ca_location"),
        ("schema_registry", "basic_auth_user_info_file"),
        ("schema_registry", "bearer_token_file"),
        ("admin", "token_file"),
        ("admin", "read_token_file"),
    ] {
        if let Some(v) = file
            .get_mut(section)
            .and_then(toml::Value::as_table_mut)
            .and_then(|t| t.get_mut(key))
        {
            resolve(v);
        }
    }
    let Some(kafka) = file.get_mut("kafka").and_then(toml::Value::as_table_mut) else {
        return;
    };
    for props in [
        "client_properties",
        "consumer_properties",
        "producer_properties",
    ] {
        if let Some(t) = kafka.get_mut(props).and_then(toml::Value::as_table_mut) {
            for (k, v) in t.iter_mut() {
                if k.ends_with(".location")
                    || k.ends_with(".file")
                    || k.ends_with("_file")
                    || k == "sasl.kerberos.keytab"
                {
                    resolve(v);
                }
            }
        }
    }
}

/// Secrets kept in files (Kubernetes secrets mounted as files, Docker
/// secrets), as Vector and Grafana take them: `KEY_file = "/path"` sets
/// `KEY` to the file's text without its trailing newline. It works for the
/// librdkafka properties (`"sasl.password_file"`,
/// `"sasl.oauthbearer.client.secret_file"`, ...), the registry's
/// `basic_auth_user_info` and `bearer_token`, and the admin `token` and
/// `read_token`. A key set both ways, or a file that cannot be read, is
/// refused naming the key.
fn read_secret_files(table: &mut toml::Table) -> Result<(), ConfigError> {
    fn take(t: &mut toml::Table, section: &str, only: Option<&[&str]>) -> Result<(), ConfigError> {
        let files: Vec<String> = t
            .keys()
            .filter(|k| {
                k.strip_suffix("_file")
                    .is_some_and(|base| only.is_none_or(|o| o.contains(&base)))
            })
            .cloned()
            .collect();
        for k in files {
            let key = format!("{section}.{}", quoted(&k));
            let base = k.strip_suffix("_file").expect("filtered").to_string();
            let Some(toml::Value::String(path)) = t.remove(&k) else {
                return Err(key_err(&key, "must be the path of a file"));
            };
            // Empty is unset (`${X_FILE:-}` in compose), as for the keys.
            if path.is_empty() {
                continue;
            }
            if t.get(&base).is_some_and(|v| v.as_str() != Some("")) {
                return Err(key_err(
                    &key,
                    format!("`{base}` is set too: give the secret one way"),
                ));
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| key_err(&key, format!("cannot read {path}: {e}")))?;
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret).to_string();
            t.insert(base, toml::Value::String(secret));
        }
        Ok(())
    }
    fn quoted(k: &str) -> String {
        if k.contains('.') {
            format!("\"{k}\"")
        } else {
            k.to_string()
        }
    }
    if let Some(kafka) = table.get_mut("kafka").and_then(toml::Value::as_table_mut) {
        for props in [
            "client_properties",
            "consumer_properties",
            "producer_properties",
        ] {
            if let Some(t) = kafka.get_mut(props).and_then(toml::Value::as_table_mut) {
                take(t, &format!("kafka.{props}"), None)?;
            }
        }
    }
    for (section, keys) in [
        (
            "schema_registry",
            &["basic_auth_user_info", "bearer_token"][..],
        ),
        ("admin", &["token", "read_token"][..]),
    ] {
        if let Some(t) = table.get_mut(section).and_then(toml::Value::as_table_mut) {
            take(t, section, Some(keys))?;
        }
    }
    Ok(())
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else
/// (values, arrays, arrays of tables) replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Applies `CHURN_ALERT__A__B=value` to `table` as `a.b = value`. The value
/// is read as a TOML value when it parses as one (numbers, booleans, arrays),
/// else as a string; librdkafka properties (`*_properties`) and secrets are
/// always taken as written.
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(key_err(var, "malformed override variable name"));
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let (last, parents) = path.split_last().expect("non-empty");
    let mut cur = table;
    for seg in parents {
        let entry = cur
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| key_err(var, format!("`{seg}` is not a section")))?;
    }
    // librdkafka properties and secrets are taken as written (a password
    // of digits, or in quotes, stays that password); elsewhere, strings
    // stay strings where the key already holds a string.
    let raw = parents.last().is_some_and(|p| p.ends_with("_properties")) || is_secret(last);
    let parsed = match (cur.get(last), parsed) {
        _ if raw => toml::Value::String(value.to_string()),
        (Some(toml::Value::String(_)), p) if !p.is_str() => toml::Value::String(value.to_string()),
        (_, p) => p,
    };
    cur.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, toml).unwrap();
        Config::load_with_env(
            Some(&p),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn relative_paths_in_the_file_resolve_against_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[store]\npath = \"state\"\n[model]\npath = \"/abs/m.json\"\n[kafka.client_properties]\n\"ssl.ca.location\" = \"certs/ca.pem\"\n\"security.protocol\" = \"SSL\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(Some(&p), Vec::new()).unwrap();
        assert_eq!(c.store.path, dir.path().join("state"));
        assert_eq!(c.model.path, PathBuf::from("/abs/m.json"));
        assert_eq!(
            c.kafka.client_properties["ssl.ca.location"],
            dir.path().join("certs/ca.pem").display().to_string()
        );
        // An environment override is the shell's, relative to where it runs.
        let c = Config::load_with_env(
            Some(&p),
            [("CHURN_ALERT__STORE__PATH".to_string(), "here".to_string())],
        )
        .unwrap();
        assert_eq!(c.store.path, PathBuf::from("here"));
        assert_eq!(c.model.path, PathBuf::from("/abs/m.json"));
        // librdkafka's `probe` is a word, not a path.
        std::fs::write(
            &p,
            "[kafka.client_properties]\n\"ssl.ca.location\" = \"probe\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(Some(&p), Vec::new()).unwrap();
        assert_eq!(c.kafka.client_properties["ssl.ca.location"], "probe");
        // Defaults too.
        std::fs::write(&p, "").unwrap();
        let c = Config::load_with_env(Some(&p), Vec::new()).unwrap();
        assert_eq!(c.store.path, PathBuf::from("data/state"));
    }

    #[test]
    fn secrets_and_client_properties_from_the_environment_are_taken_as_written() {
        let c = load(
            "",
            &[
                (
                    "CHURN_ALERT__KAFKA__CLIENT_PROPERTIES__SASL.PASSWORD",
                    "0123456789",
                ),
                (
                    "CHURN_ALERT__KAFKA__CLIENT_PROPERTIES__SASL.USERNAME",
                    "'quoted'",
                ),
                ("CHURN_ALERT__ADMIN__TOKEN", "1234567890123456"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.client_properties["sasl.password"], "0123456789");
        assert_eq!(c.kafka.client_properties["sasl.username"], "'quoted'");
        assert_eq!(c.admin.token.as_deref(), Some("1234567890123456"));
    }

    #[test]
    fn the_printed_config_masks_secrets_and_keeps_the_rest() {
        let c = load(
            "[admin]\ntoken = \"0123456789abcdef-secret\"\n[kafka.client_properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"KEY\"\n\"sasl.password\" = \"hunter2-password\"\n\"ssl.ca.location\" = \"/ca.pem\"\n[schema_registry]\nurl = \"https://sr.example.com\"\nbasic_auth_user_info = \"SRKEY:sr-secret-value\"\n",
            &[],
        )
        .unwrap();
        let t = c.masked_toml();
        assert!(
            !t.contains("hunter2")
                && !t.contains("0123456789abcdef")
                && !t.contains("sr-secret-value"),
            "{t}"
        );
        assert!(t.contains("\"sasl.username\" = \"KEY\""), "{t}");
        assert!(t.contains("\"ssl.ca.location\" = \"/ca.pem\""), "{t}");
        assert!(t.contains("\"sasl.password\" = \"***\""), "{t}");
        for secret in [
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "read_token",
            "basic_auth_user_info",
            "bearer_token",
        ] {
            assert!(is_secret(secret), "{secret}");
        }
        for plain in ["ssl.ca.location", "sasl.username", "security.protocol"] {
            assert!(!is_secret(plain), "{plain}");
        }
        // It reads back as the same config, but for the secrets.
        let back: Config = toml::from_str(&t).unwrap();
        assert_eq!(back.kafka.brokers, c.kafka.brokers);
        assert_eq!(back.admin.token.as_deref(), Some("***"));
    }

    #[test]
    fn sasl_settings_are_checked_before_any_client_is_made() {
        let err = |toml: &str| match load(toml, &[]) {
            Err(ConfigError::Key { key, message }) => format!("{key}: {message}"),
            other => panic!("{other:?}"),
        };
        let base = "[kafka.client_properties]\n\"security.protocol\" = \"SASL_SSL\"\n";
        assert!(err(base).starts_with("kafka.client_properties.\"sasl.mechanism\": must be set"));
        let plain = format!("{base}\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"k\"\n");
        assert!(err(&plain).starts_with("kafka.client_properties.\"sasl.password\": must be set"));
        load(&format!("{plain}\"sasl.password\" = \"p\"\n"), &[]).unwrap();
        let gss = format!("{base}\"sasl.mechanism\" = \"GSSAPI\"\n");
        assert!(err(&gss).contains("GSSAPI (Kerberos) is not built in"));
        let oidc = format!(
            "{base}\"sasl.mechanism\" = \"OAUTHBEARER\"\n\"sasl.oauthbearer.method\" = \"oidc\"\n"
        );
        // OIDC needs the token endpoint and the client's credentials,
        // each named when missing; a secret may come from a file.
        assert!(
            err(&oidc).contains("sasl.oauthbearer.token.endpoint.url"),
            "{}",
            err(&oidc)
        );
        let endpoint = format!(
            "{oidc}\"sasl.oauthbearer.token.endpoint.url\" = \"https://idp.example/token\"\n\"sasl.oauthbearer.client.id\" = \"churn-alert\"\n"
        );
        assert!(err(&endpoint).contains("sasl.oauthbearer.client.secret"));
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let c = load(
            &format!(
                "{endpoint}\"sasl.oauthbearer.client.secret_file\" = \"{}\"\n",
                secret.display()
            ),
            &[],
        )
        .unwrap();
        assert_eq!(
            c.kafka.client_properties["sasl.oauthbearer.client.secret"],
            "s3cret"
        );
        assert!(!c
            .kafka
            .client_properties
            .contains_key("sasl.oauthbearer.client.secret_file"));
        let other = format!(
            "{base}\"sasl.mechanism\" = \"OAUTHBEARER\"\n\"sasl.oauthbearer.method\" = \"default\"\n"
        );
        assert!(err(&other).contains("\"oidc\""), "{}", err(&other));
        // The producer's own protocol is checked too.
        let e = err("[kafka.producer_properties]\n\"security.protocol\" = \"TLS\"\n");
        assert!(
            e.starts_with("kafka.producer_properties.\"security.protocol\""),
            "{e}"
        );
    }

    /// Secrets from files: the file's text without its newline, for
    /// librdkafka properties, the registry's credentials and the admin
    /// tokens; refused naming the key when unreadable or set both ways.
    #[test]
    fn secrets_are_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let (pw, info, token) = (
            file("pw", "kafka-pass\n"),
            file("info", "user:pass"),
            file("token", "0123456789abcdef0123\r\n"),
        );
        let c = load(
            &format!(
                "[kafka.client_properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"u\"\n\"sasl.password_file\" = \"{pw}\"\n[schema_registry]\nurl = \"http://127.0.0.1:8081\"\nbasic_auth_user_info_file = \"{info}\"\n"
            ),
            &[("CHURN_ALERT__ADMIN__TOKEN_FILE", &token)],
        )
        .unwrap();
        assert_eq!(c.kafka.client_properties["sasl.password"], "kafka-pass");
        assert_eq!(
            c.schema_registry.basic_auth_user_info.as_deref(),
            Some("user:pass")
        );
        assert_eq!(c.admin.token.as_deref(), Some("0123456789abcdef0123"));
        // Never printed.
        assert!(!c.masked_toml().contains("kafka-pass"));
        let e = load(
            "",
            &[("CHURN_ALERT__ADMIN__READ_TOKEN_FILE", "/nonexistent/t")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("admin.read_token_file") && e.contains("/nonexistent/t"),
            "{e}"
        );
        let e = load(
            "",
            &[
                ("CHURN_ALERT__ADMIN__TOKEN_FILE", &token),
                ("CHURN_ALERT__ADMIN__TOKEN", "0123456789abcdef0123"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("admin.token_file") && e.contains("one way"),
            "{e}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.policy().enter, 0.7);
    }

    #[test]
    fn thresholds_come_from_config_then_model_then_defaults() {
        let mut m = crate::pipeline::model::ModelFile {
            version: "v".into(),
            features: vec![],
            mean: vec![],
            scale: vec![],
            weights: vec![],
            intercept: 0.0,
            thresholds: Some(crate::pipeline::model::Thresholds {
                enter: 0.42,
                exit: 0.3,
                basis: String::new(),
            }),
            segments: None,
            population: None,
            min_tenure_days: None,
            bgnbd: None,
            training: None,
        };
        let c = Config::default();
        let p = c.policy_for(Some(&m));
        assert_eq!((p.enter, p.exit), (0.42, 0.3));
        let c = load("[policy]\nenter_threshold = 0.8\n", &[]).unwrap();
        let p = c.policy_for(Some(&m));
        assert_eq!((p.enter, p.exit), (0.8, 0.5));
        m.thresholds = None;
        let p = Config::default().policy_for(Some(&m));
        assert_eq!((p.enter, p.exit), (DEFAULT_ENTER, DEFAULT_EXIT));
    }

    #[test]
    fn file_then_env_override() {
        let c = load(
            "[kafka]\nbrokers = \"a:1\"\n[policy]\nenter_threshold = 0.8\n",
            &[
                ("CHURN_ALERT__KAFKA__BROKERS", "b:2"),
                ("CHURN_ALERT__POLICY__COOLDOWN_DAYS", "3"),
                ("CHURN_ALERT__KAFKA__GROUP_ID", "123"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "b:2");
        assert_eq!(c.kafka.group_id, "123");
        assert_eq!(c.policy.enter_threshold, Some(0.8));
        assert_eq!(c.policy.cooldown_days, 3.0);
    }

    #[test]
    fn refusals_name_the_key() {
        let key = |toml: &str, env: &[(&str, &str)]| match load(toml, env) {
            Err(ConfigError::Key { key, .. }) => key,
            other => panic!("expected a key error, got {other:?}"),
        };
        assert_eq!(key("[kafka]\nbrokerz = \"x\"\n", &[]), "kafka.brokerz");
        assert!(load("[kafka]\nbrokerz = \"x\"\n", &[])
            .unwrap_err()
            .to_string()
            .contains("brokerz"));
        assert_eq!(
            key("[policy]\nenter_threshold = \"high\"\n", &[]),
            "policy.enter_threshold"
        );
        assert_eq!(
            key("[policy]\nenter_threshold = 1.5\n", &[]),
            "policy.enter_threshold"
        );
        assert_eq!(
            key("[policy]\nexit_threshold = 0.9\n", &[]),
            "policy.exit_threshold"
        );
        assert_eq!(
            key("", &[("CHURN_ALERT__CLOCK__MODE", "sundial")]),
            "clock.mode"
        );
        assert_eq!(
            key("[kafka]\nbatch_linger_ms = 60001\n", &[]),
            "kafka.batch_linger_ms"
        );
        assert!(load("[kafka]\nbatch_linger_ms = 60000\n", &[]).is_ok());
        // Modes are enums: the error names the key and the values allowed.
        for (text, key_at, allowed) in [
            ("[store]\nengine = \"rocks\"\n", "store.engine", "`sled`"),
            ("[log]\nformat = \"xml\"\n", "log.format", "`json`"),
            (
                "[log]\notlp_endpoint = \"collector:4317\"\n",
                "log.otlp_endpoint",
                "http://",
            ),
            (
                "[kafka]\npartitioner = \"random\"\n",
                "kafka.partitioner",
                "`murmur2_random`",
            ),
            (
                "[kafka]\nauto_offset_reset = \"middle\"\n",
                "kafka.auto_offset_reset",
                "`latest`",
            ),
        ] {
            let e = load(text, &[]).unwrap_err().to_string();
            assert!(e.contains(key_at) && e.contains(allowed), "{e}");
        }
        let c = load("[kafka]\npartitioner = \"consistent\"\n", &[]).unwrap();
        assert_eq!(c.kafka.partitioner, Partitioner::Consistent);
        assert_eq!(
            key("[features]\nhalf_lives_days = [7, -1]\n", &[]),
            "features.half_lives_days[1]"
        );
        assert_eq!(
            key(
                "[[policy.campaigns]]\ncampaign_id = \"x\"\nchannel = \"fax\"\n",
                &[]
            ),
            "policy.campaigns[0].channel"
        );
        assert_eq!(
            key("[validation.currency_rates]\nUSD = 0\n", &[]),
            "validation.currency_rates.USD"
        );
        assert!(matches!(
            load("[kafka\n", &[]),
            Err(ConfigError::Syntax { .. })
        ));
    }

    #[test]
    fn policy_segment_and_token_values_are_refused_by_key() {
        let key = |toml: &str, env: &[(&str, &str)]| match load(toml, env) {
            Err(ConfigError::Key { key, .. }) => key,
            other => panic!("{toml}: {other:?}"),
        };
        assert_eq!(
            key("[policy.contact]\nquiet_hours = [25, 3]\n", &[]),
            "policy.contact.quiet_hours"
        );
        assert_eq!(
            key(
                "[policy.contact]\ndefault_timezone = \"Mars/Olympus\"\n",
                &[]
            ),
            "policy.contact.default_timezone"
        );
        assert_eq!(
            key("[policy.holdout]\nshare = 0.9\n", &[]),
            "policy.holdout.share"
        );
        assert_eq!(key("[segments]\nmargin = 0\n", &[]), "segments.margin");
        assert_eq!(
            key(
                "[segments.rfm]\nrecency_days = [1, 2, 3, 4]\nfrequency = [5, 1, 2, 3]\nmonetary = [1, 2, 3, 4]\n",
                &[]
            ),
            "segments.rfm.frequency"
        );
        assert_eq!(
            key("", &[("CHURN_ALERT__ADMIN__TOKEN", "short")]),
            "admin.token"
        );
        // An empty token (an unset variable in compose) means none.
        let c = load("", &[("CHURN_ALERT__ADMIN__TOKEN", "")]).unwrap();
        assert_eq!(c.admin.token, None);
        let c = load("", &[("CHURN_ALERT__ADMIN__TOKEN", "0123456789abcdef")]).unwrap();
        assert_eq!(c.admin.token.as_deref(), Some("0123456789abcdef"));
    }
}
