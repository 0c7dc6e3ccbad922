//! The Kafka edge's own settings (the `[kafka]` section of the config):
//! brokers, topics, batching and the librdkafka properties of each client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::kafka::partitioner::Partitioner;

/// Whether a config key or librdkafka property holds a secret (never
/// printed: `churn-alert config` masks it, errors leave its value out).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "token",
        "password",
        "passphrase",
        "secret",
        "sasl.jaas",
        "oauthbearer.config",
        "key.pem",
        "keystore",
        "private.key",
        "user.info",
        "user_info",
    ]
    .iter()
    .any(|s| k.contains(s))
        && !k.ends_with(".location")
        && !k.ends_with("token.endpoint.url")
}

/// Where a partition with no stored state starts.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// The oldest message the topic keeps.
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

impl OffsetReset {
    /// The librdkafka `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

/// Kafka connection, topics and batching.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// Consumer group; instances with the same group share the partitions.
    pub group_id: String,
    /// Stable id of this instance in the group (Kafka static membership,
    /// `group.instance.id`), e.g. the StatefulSet pod name. A restarted
    /// instance with the same id gets its partitions back at once instead of
    /// waiting for its old membership to expire. Unset: dynamic membership.
    pub instance_id: Option<String>,
    /// Topic of customer events (keyed by customer id).
    pub input_topic: String,
    /// Topic churn alerts are published to (keyed by customer id).
    pub alerts_topic: String,
    /// Topic retention-campaign triggers are published to (keyed by customer id).
    pub triggers_topic: String,
    /// Dead-letter topic for messages that cannot be used.
    pub dlq_topic: String,
    /// Topic alert outcomes (retained or churned, treated or holdout) are
    /// published to (keyed by customer id).
    pub outcomes_topic: String,
    /// Compacted topic every state change is also written to (keyed by
    /// customer id, one partition per input partition). An instance that
    /// is given a partition whose local state is missing or older restores
    /// it from here before processing that partition's events.
    pub changelog_topic: String,
    /// How upstream producers pick the input partition from the customer
    /// id: `murmur2_random` (Java clients, Kafka Streams, Kafka Connect),
    /// `consistent_random` (librdkafka's default: CRC32), or
    /// `fnv1a_random` (Go: Sarama and kafka-go hash partitioners); also
    /// `murmur2`, `consistent`, `fnv1a` (the same for keyed records). Used to find which
    /// instance owns a customer and to key erasure events like the rest.
    pub partitioner: Partitioner,
    /// Local state of a partition this instance no longer owns is deleted
    /// after this many seconds (kept meanwhile in case it comes back, e.g.
    /// after a quick rebalance or restart).
    pub release_unowned_after_seconds: u64,
    /// Most messages processed in one batch (one state write per customer per batch).
    pub batch_max_messages: usize,
    /// Longest wait, in milliseconds, to fill a batch, counted from when the previous batch was closed (what came while that batch was processed has waited already, and is taken without waiting more). At most 60000.
    pub batch_linger_ms: u64,
    /// Where a partition with no stored state starts: `earliest` or `latest`. Kafka's committed offsets are never used to start (they are for lag only).
    pub auto_offset_reset: OffsetReset,
    /// Extra librdkafka properties for every client the service makes
    /// (consumers, producers, admin): security settings belong here, e.g.
    /// `"security.protocol" = "SASL_SSL"`.
    pub client_properties: BTreeMap<String, String>,
    /// Extra librdkafka properties for the consumers (applied after
    /// `client_properties`).
    pub consumer_properties: BTreeMap<String, String>,
    /// Extra librdkafka properties for the producer and the admin client
    /// that creates and checks topics (applied after `client_properties`).
    pub producer_properties: BTreeMap<String, String>,
    /// Largest payload a dead letter carries. A message larger than this
    /// (say a 2 MB poison pill) is dead-lettered cut to this size, with its
    /// original size, the SHA-256 of its bytes and its source coordinates
    /// in headers, so the dead-letter topic never refuses it and the
    /// original can be found and checked in the source topic. Must leave
    /// room for headers under the producer's `message.max.bytes`.
    pub dead_letter_max_bytes: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "churn-alert".into(),
            instance_id: None,
            input_topic: "customer-events".into(),
            alerts_topic: "churn-alerts".into(),
            triggers_topic: "retention-triggers".into(),
            dlq_topic: "customer-events-dlq".into(),
            outcomes_topic: "churn-outcomes".into(),
            changelog_topic: "churn-alert-state-changelog".into(),
            partitioner: Partitioner::Murmur2Random,
            release_unowned_after_seconds: 300,
            batch_max_messages: 10_000,
            batch_linger_ms: 50,
            auto_offset_reset: OffsetReset::Earliest,
            client_properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
            dead_letter_max_bytes: 256 * 1024,
        }
    }
}

impl KafkaConfig {
    /// The producer's `message.max.bytes` as configured (librdkafka's
    /// default, 1,000,000, when unset), if it is a number.
    pub fn producer_message_max_bytes(&self) -> Option<usize> {
        self.producer_properties
            .get("message.max.bytes")
            .or_else(|| self.client_properties.get("message.max.bytes"))
            .map_or(Some(1_000_000), |v| v.trim().parse().ok())
    }

    /// Checks the security settings each client would get, before any
    /// client is made: a known `security.protocol`, a SASL mechanism this
    /// build has, and the credentials that mechanism needs. Returns the
    /// config key and what is wrong.
    pub fn check_security(&self) -> Result<(), (String, String)> {
        for (section, own) in [
            ("kafka.consumer_properties", &self.consumer_properties),
            ("kafka.producer_properties", &self.producer_properties),
        ] {
            // The role's own map overrides the shared one, as in the clients.
            let get = |p: &str| {
                own.get(p).map(|v| (section, v)).or_else(|| {
                    self.client_properties
                        .get(p)
                        .map(|v| ("kafka.client_properties", v))
                })
            };
            let key = |section: &str, p: &str| format!("{section}.\"{p}\"");
            let protocol = get("security.protocol");
            let sasl = match protocol {
                None => false,
                Some((s, v)) => match v.to_ascii_uppercase().as_str() {
                    "PLAINTEXT" | "SSL" => false,
                    "SASL_PLAINTEXT" | "SASL_SSL" => true,
                    _ => {
                        return Err((
                            key(s, "security.protocol"),
                            format!("{v:?} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
                        ))
                    }
                },
            };
            if !sasl {
                continue;
            }
            let Some((ms, mechanism)) = get("sasl.mechanism").or_else(|| get("sasl.mechanisms"))
            else {
                return Err((
                    key("kafka.client_properties", "sasl.mechanism"),
                    "must be set with a SASL security.protocol: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER".into(),
                ));
            };
            let need: &[&str] = match mechanism.to_ascii_uppercase().as_str() {
                "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => &["sasl.username", "sasl.password"],
                "OAUTHBEARER" => {
                    let unsecure = get("enable.sasl.oauthbearer.unsecure.jwt")
                        .is_some_and(|(_, v)| v == "true");
                    let method = get("sasl.oauthbearer.method")
                        .map(|(_, v)| v.to_ascii_lowercase());
                    match method.as_deref() {
                        // librdkafka's unsigned test tokens, for development.
                        _ if unsecure => &[],
                        // Tokens from the identity provider's token endpoint
                        // (Confluent Cloud, Azure Event Hubs with Entra ID,
                        // Okta, Keycloak...): client credentials, or a
                        // signed assertion (`sasl.oauthbearer.grant.type`
                        // jwt-bearer) in place of the secret.
                        Some("oidc") => {
                            // Azure's managed identity (the instance
                            // metadata endpoint) needs no secret.
                            let is = |p: &str, v: &str| {
                                get(p).is_some_and(|(_, x)| x.eq_ignore_ascii_case(v))
                            };
                            if is("sasl.oauthbearer.metadata.authentication.type", "azure_imds") {
                                &[]
                            } else if is(
                                "sasl.oauthbearer.grant.type",
                                "urn:ietf:params:oauth:grant-type:jwt-bearer",
                            ) {
                                &["sasl.oauthbearer.token.endpoint.url"]
                            } else {
                                &[
                                    "sasl.oauthbearer.token.endpoint.url",
                                    "sasl.oauthbearer.client.id",
                                    "sasl.oauthbearer.client.secret",
                                ]
                            }
                        }
                        _ => {
                            return Err((
                                key("kafka.client_properties", "sasl.oauthbearer.method"),
                                "OAUTHBEARER needs sasl.oauthbearer.method = \"oidc\" with your identity provider's sasl.oauthbearer.token.endpoint.url, client.id and client.secret (Amazon MSK IAM: see docs/configuration.md)".into(),
                            ))
                        }
                    }
                }
                "GSSAPI" => {
                    return Err((
                        key(ms, "sasl.mechanism"),
                        "GSSAPI (Kerberos) is not built in; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512".into(),
                    ))
                }
                _ => {
                    return Err((
                        key(ms, "sasl.mechanism"),
                        format!("{mechanism:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER"),
                    ))
                }
            };
            for p in need {
                if get(p).is_none_or(|(_, v)| v.is_empty()) {
                    return Err((
                        key("kafka.client_properties", p),
                        format!("must be set for SASL mechanism {mechanism}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every topic the service reads or writes: input, alerts, triggers,
    /// outcomes, dead letters and the changelog.
    pub fn topics(&self) -> [&str; 6] {
        [
            &self.input_topic,
            &self.alerts_topic,
            &self.triggers_topic,
            &self.outcomes_topic,
            &self.dlq_topic,
            &self.changelog_topic,
        ]
    }
}
