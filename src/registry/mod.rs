//! The Schema Registry edge: fetches schemas by id for messages in
//! Confluent's wire format, from a registry's REST API
//! (`GET /schemas/ids/{id}`) or, for sites without one, from a folder of
//! the same answers saved as `<id>.json`. Parsing and decoding are the
//! pure core's ([`crate::pipeline::wire`]); the service keeps what was
//! fetched (a schema id never changes what it names).
//!
//! - An id the registry does not know (404 with its error code 40403, or
//!   no file) is a schema that cannot be had: its messages are
//!   dead-lettered as `unknown_schema`.
//! - A registry that cannot be reached, times out, answers 5xx, 408 or
//!   429, or answers with something that is not its JSON is waited for
//!   (the service reports not ready), never skipped.
//! - Credentials it refuses (401, 403), another 404 (a URL that is not
//!   the registry) or another 4xx stop the service: no retry fixes them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pipeline::error::{Classify, ErrorClass};
use crate::pipeline::wire::{RegisteredSchema, SchemaEntry, SchemaError};

/// `schema_registry`: where schemas of framed messages come from. With
/// neither `url` nor `dir`, framed messages are dead-lettered as
/// `unknown_schema`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Base URL of a Confluent-compatible Schema Registry, e.g.
    /// `https://psrc-xxxxx.europe-west3.gcp.confluent.cloud`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `KEY:SECRET` for HTTP basic auth (Confluent Cloud's registry API key
    /// and secret); best set by
    /// `CHURN_ALERT__SCHEMA_REGISTRY__BASIC_AUTH_USER_INFO`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth_user_info: Option<String>,
    /// A bearer token instead of basic auth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    /// PEM file of the CA that signed the registry's certificate (default:
    /// the system's CAs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_location: Option<PathBuf>,
    /// Instead of `url`: a folder of schema files for sites without a
    /// registry, each `<id>.json` holding the registry's answer for that id
    /// (`curl $URL/schemas/ids/<id> > <id>.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Longest wait, in seconds, for one answer of the registry.
    pub timeout_seconds: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: None,
            basic_auth_user_info: None,
            bearer_token: None,
            ca_location: None,
            dir: None,
            timeout_seconds: 10,
        }
    }
}

impl RegistryConfig {
    /// The checks serde cannot make: `(key, message)` of the first refused.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.url.is_some() && self.dir.is_some() {
            return Err((
                "schema_registry.dir",
                "set either schema_registry.url or schema_registry.dir, not both".into(),
            ));
        }
        if let Some(url) = &self.url {
            // The value is not shown: it could hold credentials.
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| ("schema_registry.url", format!("not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err((
                    "schema_registry.url",
                    "must be an http:// or https:// URL".into(),
                ));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err((
                    "schema_registry.url",
                    "must not hold credentials (they would show in logs): set schema_registry.basic_auth_user_info".into(),
                ));
            }
        }
        if self.basic_auth_user_info.is_some() && self.bearer_token.is_some() {
            return Err((
                "schema_registry.bearer_token",
                "set either basic_auth_user_info or bearer_token, not both".into(),
            ));
        }
        if let Some(info) = &self.basic_auth_user_info {
            if !info.contains(':') {
                return Err((
                    "schema_registry.basic_auth_user_info",
                    "must be KEY:SECRET (the value is not shown)".into(),
                ));
            }
        }
        if self.url.is_none()
            && (self.basic_auth_user_info.is_some()
                || self.bearer_token.is_some()
                || self.ca_location.is_some())
        {
            return Err((
                "schema_registry.url",
                "credentials or a CA are set but no url to use them with".into(),
            ));
        }
        if let Some(ca) = &self.ca_location {
            if let Err(e) = std::fs::read(ca) {
                return Err((
                    "schema_registry.ca_location",
                    format!("cannot read {}: {e}", ca.display()),
                ));
            }
        }
        if let Some(dir) = &self.dir {
            if !dir.is_dir() {
                return Err((
                    "schema_registry.dir",
                    format!("{} is not a folder", dir.display()),
                ));
            }
        }
        if self.timeout_seconds == 0 {
            return Err((
                "schema_registry.timeout_seconds",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A fetch that failed: waited for, or for good.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Unreachable, a timeout, 5xx, 408, 429, an answer that is not the
    /// registry's JSON, a file that cannot be read.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// Credentials refused (401, 403), another 4xx (a wrong URL among
    /// them), redirects without end, or a client that cannot be built.
    #[error("schema registry refused the service: {0}")]
    Refused(String),
}

impl Classify for RegistryError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Unavailable(_) => ErrorClass::Transient,
            Self::Refused(_) => ErrorClass::Config,
        }
    }
}

enum Source {
    Http {
        client: reqwest::Client,
        base: String,
        auth: Auth,
    },
    Dir(PathBuf),
}

enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

/// Fetches schemas by id.
pub struct Registry {
    source: Source,
}

impl Registry {
    /// The registry of the config; `None` when none is configured.
    pub fn new(cfg: &RegistryConfig) -> Result<Option<Self>, RegistryError> {
        let source = if let Some(url) = &cfg.url {
            let mut builder =
                reqwest::Client::builder().timeout(Duration::from_secs(cfg.timeout_seconds));
            if let Some(ca) = &cfg.ca_location {
                let pem = std::fs::read(ca).map_err(|e| {
                    RegistryError::Refused(format!(
                        "schema_registry.ca_location: cannot read {}: {e}",
                        ca.display()
                    ))
                })?;
                let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                    RegistryError::Refused(format!(
                        "schema_registry.ca_location: {} is not a PEM certificate: {e}",
                        ca.display()
                    ))
                })?;
                builder = builder.add_root_certificate(cert);
            }
            let client = builder
                .build()
                .map_err(|e| RegistryError::Refused(format!("HTTP client: {e}")))?;
            let auth = match (&cfg.basic_auth_user_info, &cfg.bearer_token) {
                (Some(info), _) => {
                    let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                    Auth::Basic(user.to_string(), pass.to_string())
                }
                (None, Some(t)) => Auth::Bearer(t.clone()),
                (None, None) => Auth::None,
            };
            Source::Http {
                client,
                base: url.trim_end_matches('/').to_string(),
                auth,
            }
        } else if let Some(dir) = &cfg.dir {
            Source::Dir(dir.clone())
        } else {
            return Ok(None);
        };
        Ok(Some(Self { source }))
    }

    /// Where schemas come from, for logs.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Http { base, .. } => base.clone(),
            Source::Dir(d) => d.display().to_string(),
        }
    }

    /// Whether the registry answers with these credentials (`GET
    /// /subjects`), or the folder can be read.
    pub async fn reach(&self) -> Result<(), RegistryError> {
        match &self.source {
            Source::Http { client, base, auth } => {
                let url = format!("{base}/subjects");
                let req = authorized(
                    client
                        .get(&url)
                        .header("Accept", "application/vnd.schemaregistry.v1+json"),
                    auth,
                );
                let resp = req
                    .send()
                    .await
                    .map_err(|e| RegistryError::Unavailable(format!("GET {url}: {}", chain(&e))))?;
                match resp.status().as_u16() {
                    200 => Ok(()),
                    401 | 403 => Err(RegistryError::Refused(format!(
                        "GET {url} answered {}: check schema_registry.basic_auth_user_info or bearer_token",
                        resp.status()
                    ))),
                    _ => Err(RegistryError::Refused(format!(
                        "GET {url} answered {}: check schema_registry.url",
                        resp.status()
                    ))),
                }
            }
            Source::Dir(dir) => std::fs::read_dir(dir).map(|_| ()).map_err(|e| {
                RegistryError::Refused(format!("schema_registry.dir {}: {e}", dir.display()))
            }),
        }
    }

    /// Registers `schema` (of `schema_type`: AVRO, JSON) under `subject`
    /// and returns its id; a schema the subject already has keeps its id.
    /// A registry that refuses (credentials, an incompatible schema, no
    /// right to register) is told apart from one that is down.
    pub async fn register(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
    ) -> Result<u32, RegistryError> {
        let Source::Http { client, base, auth } = &self.source else {
            return Err(RegistryError::Refused(
                "schemas cannot be registered in a folder (schema_registry.dir): set schema_registry.url, or outputs.schema_ids".into(),
            ));
        };
        let url = format!("{base}/subjects/{subject}/versions");
        let body = serde_json::json!({"schemaType": schema_type, "schema": schema});
        let resp = authorized(
            client
                .post(&url)
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string()),
            auth,
        )
        .send()
        .await
        .map_err(|e| RegistryError::Unavailable(format!("POST {url}: {}", chain(&e))))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("POST {url}: {}", chain(&e))))?;
        match status.as_u16() {
            200 => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("id")?.as_u64())
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    RegistryError::Unavailable(format!("POST {url}: no schema id in {text:?}"))
                }),
            408 | 429 | 500..=599 => Err(RegistryError::Unavailable(format!(
                "POST {url} answered {status}: {text}"
            ))),
            401 | 403 => Err(RegistryError::Refused(format!(
                "POST {url} answered {status}: check the registry credentials, or register the schemas beforehand and set outputs.schema_ids"
            ))),
            _ => Err(RegistryError::Refused(format!(
                "POST {url} answered {status}: {text}"
            ))),
        }
    }

    /// Fetches and parses schema `id`. A schema the registry does not know
    /// (404 with its error code 40403, or no file), or that cannot be
    /// used, is an [`SchemaEntry::Unusable`] entry, not an error.
    pub async fn fetch(&self, id: u32) -> Result<SchemaEntry, RegistryError> {
        let body = match &self.source {
            Source::Http { client, base, auth } => {
                match fetch_http(client, base, auth, id).await? {
                    Some(b) => b,
                    None => {
                        return Ok(SchemaEntry::Unusable(format!(
                            "the schema registry has no schema id {id}"
                        )))
                    }
                }
            }
            Source::Dir(dir) => match read_file(dir, id)? {
                Some(b) => b,
                None => {
                    return Ok(SchemaEntry::Unusable(format!(
                        "schema id {id} is not in {} (no {id}.json)",
                        dir.display()
                    )))
                }
            },
        };
        match RegisteredSchema::from_registry_body(id, &body) {
            Ok(s) => Ok(SchemaEntry::Ready(std::sync::Arc::new(s))),
            Err(SchemaError::Unusable(why)) => Ok(SchemaEntry::Unusable(why)),
            Err(SchemaError::NotAnAnswer(why)) => Err(RegistryError::Unavailable(why)),
        }
    }
}

/// A request with the registry's credentials.
fn authorized(req: reqwest::RequestBuilder, auth: &Auth) -> reqwest::RequestBuilder {
    match auth {
        Auth::None => req,
        Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        Auth::Bearer(t) => req.bearer_auth(t),
    }
}

async fn fetch_http(
    client: &reqwest::Client,
    base: &str,
    auth: &Auth,
    id: u32,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let url = format!("{base}/schemas/ids/{id}");
    let mut req = client
        .get(&url)
        .header("Accept", "application/vnd.schemaregistry.v1+json");
    req = authorized(req, auth);
    let resp = req.send().await.map_err(|e| {
        let why = format!("GET {url}: {}", chain(&e));
        if e.is_builder() || e.is_redirect() {
            RegistryError::Refused(why)
        } else {
            RegistryError::Unavailable(why)
        }
    })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| RegistryError::Unavailable(format!("GET {url}: {}", chain(&e))))?;
    let text = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    match status.as_u16() {
        200 => Ok(Some(body.to_vec())),
        // The registry's own "schema not found"; any other 404 is a URL
        // that does not lead to a registry.
        404 if error_code(&body) == Some(40403) => Ok(None),
        404 => Err(RegistryError::Refused(format!(
            "GET {url} answered {status} without the registry's schema-not-found code (40403): check schema_registry.url"
        ))),
        401 | 403 => Err(RegistryError::Refused(format!(
            "GET {url} answered {status}: check schema_registry.basic_auth_user_info or bearer_token"
        ))),
        408 | 429 | 500..=599 => Err(RegistryError::Unavailable(format!(
            "GET {url} answered {status}: {}",
            text()
        ))),
        _ => Err(RegistryError::Refused(format!(
            "GET {url} answered {status}: {} (check schema_registry.url)",
            text()
        ))),
    }
}

/// The `error_code` of a registry error answer.
fn error_code(body: &[u8]) -> Option<i64> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("error_code")?
        .as_i64()
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

fn read_file(dir: &Path, id: u32) -> Result<Option<Vec<u8>>, RegistryError> {
    let path = dir.join(format!("{id}.json"));
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RegistryError::Unavailable(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_checked_naming_the_key() {
        let ok = RegistryConfig {
            url: Some("https://sr.example.com".into()),
            basic_auth_user_info: Some("k:s".into()),
            ..Default::default()
        };
        assert!(ok.check().is_ok());
        let key = |c: RegistryConfig| c.check().unwrap_err().0;
        for bad in [
            "sr.example.com",
            "ftp://sr.example.com",
            "https://k:s@sr.example.com",
        ] {
            let c = RegistryConfig {
                url: Some(bad.into()),
                ..Default::default()
            };
            let (k, why) = c.check().unwrap_err();
            assert_eq!(k, "schema_registry.url", "{bad}");
            assert!(!why.contains("k:s"), "{why}");
        }
        assert_eq!(
            key(RegistryConfig {
                basic_auth_user_info: Some("nocolon".into()),
                ..ok.clone()
            }),
            "schema_registry.basic_auth_user_info"
        );
        assert_eq!(
            key(RegistryConfig {
                bearer_token: Some("t".into()),
                ..ok.clone()
            }),
            "schema_registry.bearer_token"
        );
        assert_eq!(
            key(RegistryConfig {
                dir: Some("/nonexistent/schemas".into()),
                url: None,
                basic_auth_user_info: None,
                ..Default::default()
            }),
            "schema_registry.dir"
        );
        assert_eq!(
            key(RegistryConfig {
                url: None,
                ..ok.clone()
            }),
            "schema_registry.url"
        );
    }

    #[tokio::test]
    async fn a_folder_serves_schemas_by_id_and_a_missing_id_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("7.json"),
            r#"{"schema":"{\"type\":\"object\"}","schemaType":"JSON"}"#,
        )
        .unwrap();
        let r = Registry::new(&RegistryConfig {
            dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert!(matches!(r.fetch(7).await.unwrap(), SchemaEntry::Ready(_)));
        match r.fetch(8).await.unwrap() {
            SchemaEntry::Unusable(why) => assert!(why.contains("8.json"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
