//! The one place librdkafka client settings are assembled: every consumer,
//! producer and admin client of the service is built here, so security
//! settings reach each of them by the same path.

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;

use crate::kafka::settings::{is_secret, KafkaConfig};

/// What a client is for: which of the configured property maps applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Consumers (the input consumer, changelog restores, owner lookups):
    /// `client_properties`, then `consumer_properties`.
    Consumer,
    /// The output producer: `client_properties`, then `producer_properties`.
    Producer,
    /// The admin client that creates and checks topics: as the producer.
    Admin,
}

/// A client's settings: `bootstrap.servers`, then `defaults`, then the
/// user's properties for the role (which override the defaults), then
/// `fixed` (which nothing overrides). The input consumer passes all its
/// settings as defaults, as it always has; the changelog restore consumer
/// fixes its own.
pub fn client_config(
    cfg: &KafkaConfig,
    role: Role,
    defaults: &[(&str, &str)],
    fixed: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    let own = match role {
        Role::Consumer => &cfg.consumer_properties,
        Role::Producer | Role::Admin => &cfg.producer_properties,
    };
    for (k, v) in cfg.client_properties.iter().chain(own) {
        c.set(k, v);
    }
    // TLS with no CA set trusts the system's CA certificates (librdkafka's
    // probe of the usual paths): the OpenSSL built in would otherwise look
    // only under its own build prefix, and public clusters would fail.
    let tls = c
        .get("security.protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("SSL") || p.eq_ignore_ascii_case("SASL_SSL"));
    if tls && c.get("ssl.ca.location").is_none() && c.get("ssl.ca.pem").is_none() {
        c.set("ssl.ca.location", "probe");
    }
    // The same for the identity provider's token endpoint (OIDC), which
    // librdkafka's HTTP client reaches with its own CA setting.
    let oidc = c
        .get("sasl.oauthbearer.method")
        .is_some_and(|m| m.eq_ignore_ascii_case("oidc"));
    if oidc && c.get("https.ca.location").is_none() && c.get("https.ca.pem").is_none() {
        c.set("https.ca.location", "probe");
    }
    for (k, v) in fixed {
        c.set(*k, *v);
    }
    c
}

/// Kafka client settings that librdkafka refuses: the operator's to fix,
/// so the start stops (exit code 2) instead of retrying.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ClientSettingsError {
    /// Where the refused setting is, e.g.
    /// `kafka.client_properties."security.protocol"`.
    pub key: String,
    pub message: String,
}

/// The input consumer's own settings (before the user's).
pub fn consumer_defaults(cfg: &KafkaConfig) -> Vec<(&str, &str)> {
    vec![
        ("group.id", cfg.group_id.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", cfg.auto_offset_reset.as_str()),
        ("statistics.interval.ms", "2000"),
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "2000"),
    ]
}

/// A consumer whose partitions are assigned by hand, read from the start
/// to the end (partition ends reported) and never committed: the group id
/// `<group_id>-<role>` only names the client (changelog restores, the
/// experiment readout).
pub fn hand_assigned_consumer(
    cfg: &KafkaConfig,
    role: &str,
) -> Result<rdkafka::consumer::BaseConsumer, rdkafka::error::KafkaError> {
    let group = format!("{}-{role}", cfg.group_id);
    let fixed = [
        ("group.id", group.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "true"),
        ("auto.offset.reset", "earliest"),
    ];
    client_config(cfg, Role::Consumer, &[], &fixed).create()
}

/// The output producer's own settings (before the user's).
pub fn producer_defaults(cfg: &KafkaConfig) -> Vec<(&str, &str)> {
    vec![
        ("enable.idempotence", "true"),
        // Keyed outputs and erasure events land where upstream producers
        // put the same customer.
        ("partitioner", cfg.partitioner.librdkafka_name()),
        // The committer waits for all of a batch's records before it
        // commits, so lingering only delays every batch (two round trips
        // each); records queued together still share requests.
        ("linger.ms", "0"),
        ("message.timeout.ms", "30000"),
    ]
}

/// Creates each kind of client the service makes (consumer, producer,
/// admin) from the settings, without connecting, so that a setting
/// librdkafka refuses (an unknown property or value, a CA file that
/// cannot be read, a mechanism it was built without) stops the start
/// with the key named, not a retry loop.
pub fn check(cfg: &KafkaConfig) -> Result<(), ClientSettingsError> {
    for role in [Role::Consumer, Role::Producer, Role::Admin] {
        // The real clients' own settings, so that the check refuses what
        // they would refuse (e.g. `acks` other than `all` beside
        // idempotence) and accepts what they accept.
        let defaults = match role {
            Role::Consumer => {
                let mut d = consumer_defaults(cfg);
                if let Some(id) = &cfg.instance_id {
                    d.push(("group.instance.id", id));
                }
                d
            }
            Role::Producer => producer_defaults(cfg),
            Role::Admin => Vec::new(),
        };
        let mut c = client_config(cfg, role, &defaults, &[]);
        // Made to be checked, not to connect.
        c.remove("bootstrap.servers");
        let made = match role {
            Role::Consumer => c.create::<BaseConsumer>().map(drop),
            Role::Producer => c.create::<BaseProducer>().map(drop),
            Role::Admin => c.create::<AdminClient<DefaultClientContext>>().map(drop),
        };
        made.map_err(|e| refused(cfg, role, &e))?;
    }
    Ok(())
}

/// The error for a client librdkafka would not create, naming the config
/// key that holds the property it refused.
fn refused(cfg: &KafkaConfig, role: Role, e: &KafkaError) -> ClientSettingsError {
    let own = match role {
        Role::Consumer => ("kafka.consumer_properties", &cfg.consumer_properties),
        Role::Producer | Role::Admin => ("kafka.producer_properties", &cfg.producer_properties),
    };
    let maps = [own, ("kafka.client_properties", &cfg.client_properties)];
    let key_of = |property: &str| {
        if property == "bootstrap.servers" {
            return Some("kafka.brokers".to_string());
        }
        maps.iter()
            .find(|(_, m)| m.contains_key(property))
            .map(|(section, _)| format!("{section}.\"{property}\""))
    };
    match e {
        KafkaError::ClientConfig(_, description, property, value) => {
            let known = !description.contains("No such configuration property");
            ClientSettingsError {
                key: key_of(property)
                    .unwrap_or_else(|| format!("kafka (librdkafka property {property:?})")),
                // The value only where it cannot be a secret (a misspelt
                // property name could be one).
                message: if known && !is_secret(property) {
                    format!("librdkafka refuses {value:?}: {description}")
                } else {
                    format!("librdkafka refuses it: {description}")
                },
            }
        }
        other => {
            let text = other.to_string();
            // librdkafka names the property first, e.g. "ssl.ca.location
            // failed: …"; find the user's setting it speaks of.
            let named = maps
                .iter()
                .flat_map(|(_, m)| m.iter())
                .filter(|(p, _)| text.contains(p.as_str()))
                .max_by_key(|(p, _)| p.len());
            // A file the setting names is shown (never a secret's value).
            let message = match named {
                Some((p, v)) if p.ends_with(".location") => format!("{text} (file {v:?})"),
                _ => text.clone(),
            };
            let key = named
                .and_then(|(p, _)| key_of(p))
                .or_else(|| {
                    // A property the user has not set, e.g. "sasl.username
                    // and sasl.password must be set".
                    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                        .find(|w| {
                            w.contains('.')
                                && !w.ends_with('.')
                                && w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                        })
                        .map(|p| format!("kafka.client_properties.\"{p}\""))
                })
                .unwrap_or_else(|| "kafka.client_properties".to_string());
            ClientSettingsError { key, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_properties_sit_between_defaults_and_fixed_settings() {
        let mut cfg = KafkaConfig::default();
        cfg.client_properties
            .insert("security.protocol".into(), "SSL".into());
        cfg.consumer_properties
            .insert("session.timeout.ms".into(), "30000".into());
        cfg.consumer_properties
            .insert("group.id".into(), "theirs".into());
        cfg.producer_properties
            .insert("linger.ms".into(), "50".into());
        let c = client_config(
            &cfg,
            Role::Consumer,
            &[("session.timeout.ms", "10000")],
            &[("group.id", "ours")],
        );
        assert_eq!(c.get("bootstrap.servers"), Some(cfg.brokers.as_str()));
        assert_eq!(c.get("security.protocol"), Some("SSL"));
        // TLS with no CA of the user's trusts the system's.
        assert_eq!(c.get("ssl.ca.location"), Some("probe"));
        assert_eq!(c.get("session.timeout.ms"), Some("30000"));
        assert_eq!(c.get("group.id"), Some("ours"));
        assert_eq!(c.get("linger.ms"), None);
        for role in [Role::Producer, Role::Admin] {
            let c = client_config(&cfg, role, &[], &[]);
            assert_eq!(c.get("security.protocol"), Some("SSL"));
            assert_eq!(c.get("linger.ms"), Some("50"));
            assert_eq!(c.get("session.timeout.ms"), None);
        }
    }

    #[test]
    fn refused_client_settings_name_their_key() {
        let mut cfg = KafkaConfig::default();
        check(&cfg).expect("the defaults make every client");
        cfg.client_properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        cfg.client_properties
            .insert("sasl.mechanism".into(), "SCRAM-SHA-512".into());
        let e = check(&cfg).unwrap_err();
        assert_eq!(e.key, "kafka.client_properties.\"sasl.username\"", "{e}");
        cfg.client_properties
            .insert("sasl.username".into(), "key".into());
        cfg.client_properties
            .insert("sasl.password".into(), "secret".into());
        check(&cfg).expect("TLS and SASL SCRAM are built in");
        // What the real producer refuses beside idempotence, and what the
        // real consumer accepts with its own session timeout.
        cfg.producer_properties.insert("acks".into(), "1".into());
        let e = check(&cfg).unwrap_err();
        assert_eq!(e.key, "kafka.producer_properties.\"acks\"", "{e}");
        cfg.producer_properties.clear();
        cfg.consumer_properties
            .insert("max.poll.interval.ms".into(), "20000".into());
        check(&cfg).expect("above the service's 10 s session timeout");
        cfg.consumer_properties.clear();
        cfg.client_properties
            .insert("security.protocol".into(), "SASL_TLS".into());
        let e = check(&cfg).unwrap_err();
        assert_eq!(e.key, "kafka.client_properties.\"security.protocol\"");
        assert!(e.message.contains("SASL_TLS"), "{e}");
        cfg.client_properties
            .insert("security.protocol".into(), "SSL".into());
        cfg.producer_properties
            .insert("ssl.ca.location".into(), "/nonexistent/ca.pem".into());
        let e = check(&cfg).unwrap_err();
        assert_eq!(
            e.key, "kafka.producer_properties.\"ssl.ca.location\"",
            "{e}"
        );
        cfg.producer_properties.clear();
        cfg.consumer_properties
            .insert("compression.codec".into(), "zstd".into());
        cfg.consumer_properties
            .insert("no.such.property".into(), "hunter2".into());
        let e = check(&cfg).unwrap_err();
        assert!(
            !e.message.contains("hunter2"),
            "a misspelt secret's value is not shown: {e}"
        );
        assert_eq!(
            e.key, "kafka.consumer_properties.\"no.such.property\"",
            "{e}"
        );
    }
}
