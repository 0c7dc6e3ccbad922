//! The one place librdkafka client settings are assembled: every consumer,
//! producer and admin client of the service is built here, so security
//! settings reach each of them by the same path.

use rdkafka::config::ClientConfig;

use crate::kafka::settings::KafkaConfig;

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
    for (k, v) in fixed {
        c.set(*k, *v);
    }
    c
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
}
