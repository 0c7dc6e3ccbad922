//! Which instance owns a customer: the customer's input partition (from
//! the configured key partitioner) and the group member that partition is
//! assigned to (from the group's description, as Kafka holds it).

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::KafkaConfig;
use crate::partitioner::Partitioner;

/// A group member that holds a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    /// The member's admin address, when it advertises one
    /// (`admin.advertised_url`, sent as its client id).
    pub admin_url: Option<String>,
}

/// Where a customer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub partition: i32,
    /// `None` while the partition is not assigned (e.g. mid-rebalance).
    pub owner: Option<Owner>,
}

/// Looks up the partition and owner of a customer id (blocking).
pub fn locate(cfg: &KafkaConfig, key: &[u8]) -> Result<Located, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.consumer_properties {
        c.set(k, v);
    }
    let client: BaseConsumer = c.create().map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(5);
    let md = client
        .fetch_metadata(Some(&cfg.input_topic), timeout)
        .map_err(|e| e.to_string())?;
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == cfg.input_topic)
        .map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        return Err(format!("input topic {:?} has no partitions", cfg.input_topic));
    }
    let partitioner = Partitioner::parse(&cfg.partitioner).unwrap_or(Partitioner::Murmur2);
    let partition = partitioner.partition(key, partitions);
    let groups = client
        .fetch_group_list(Some(&cfg.group_id), timeout)
        .map_err(|e| e.to_string())?;
    let owner = groups
        .groups()
        .iter()
        .flat_map(|g| g.members())
        .find(|m| {
            m.assignment()
                .and_then(parse_assignment)
                .is_some_and(|a| a.iter().any(|(t, ps)| t == &cfg.input_topic && ps.contains(&partition)))
        })
        .map(|m| Owner {
            member_id: m.id().to_string(),
            client_id: m.client_id().to_string(),
            host: m.client_host().to_string(),
            admin_url: (m.client_id().starts_with("http://") || m.client_id().starts_with("https://"))
                .then(|| m.client_id().to_string()),
        });
    Ok(Located { partition, owner })
}

/// Parses a consumer protocol assignment (version, then topics with their
/// partitions; user data after is ignored).
pub fn parse_assignment(bytes: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    let topics = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = r.i16()?;
        let name = String::from_utf8(r.take(usize::try_from(len).ok()?)?.to_vec()).ok()?;
        let n = r.i32()?;
        let mut ps = Vec::new();
        for _ in 0..n.max(0) {
            ps.push(r.i32()?);
        }
        out.push((name, ps));
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_parse_and_truncated_ones_are_refused() {
        let mut b = Vec::new();
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        for (t, ps) in [("events", vec![0, 3]), ("other", vec![1])] {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
            b.extend_from_slice(&(ps.len() as i32).to_be_bytes());
            for p in ps {
                b.extend_from_slice(&(p as i32).to_be_bytes());
            }
        }
        b.extend_from_slice(&(-1i32).to_be_bytes()); // no user data
        assert_eq!(
            parse_assignment(&b).unwrap(),
            vec![("events".to_string(), vec![0, 3]), ("other".to_string(), vec![1])]
        );
        assert_eq!(parse_assignment(&b[..b.len() - 10]), None);
    }
}
