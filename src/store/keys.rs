//! The key layout shared by the on-disk engines, inside one partition's
//! keyspace:
//! - `c` + customer id → encoded [`CustomerState`](crate::pipeline::features::CustomerState)
//! - `d` + due time (8 bytes, order-preserving) + customer id → empty
//! - `m` → [`PartitionMeta`](super::PartitionMeta) (four little-endian `i64`s)

use crate::pipeline::event::Millis;

/// Prefix of a partition's keyspace name (followed by its number).
pub const PARTITION_PREFIX: &str = "partition-";
/// The partition's metadata.
pub const META_KEY: &[u8] = b"m";
/// Name of the keyspace that keeps states that could not be decoded.
pub const QUARANTINE: &str = "quarantine";
/// Prefix of every customer state key.
pub const STATE_PREFIX: &[u8] = b"c";
/// Prefix of every due-index key.
pub const DUE_PREFIX: &[u8] = b"d";

/// Due time as 8 bytes that sort like the signed number.
fn due_bytes(t: Millis) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn due_key(t: Millis, customer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + customer.len());
    k.extend_from_slice(DUE_PREFIX);
    k.extend_from_slice(&due_bytes(t));
    k.extend_from_slice(customer.as_bytes());
    k
}

/// The due-index key range holding times from `from` to `up_to`, both
/// included, whoever the customer.
pub fn due_range(from: Millis, up_to: Millis) -> (Vec<u8>, Vec<u8>) {
    let mut start = DUE_PREFIX.to_vec();
    start.extend_from_slice(&due_bytes(from));
    let mut end = DUE_PREFIX.to_vec();
    end.extend_from_slice(&due_bytes(up_to));
    end.push(0xff);
    (start, end)
}

/// A due-index key's time and customer (`None`: not a due key).
pub fn parse_due_key(k: &[u8]) -> Option<(Millis, String)> {
    let rest = k.strip_prefix(DUE_PREFIX)?;
    let (time, customer) = rest.split_first_chunk::<8>()?;
    let t = (u64::from_be_bytes(*time) ^ (1 << 63)) as Millis;
    Some((t, String::from_utf8_lossy(customer).into_owned()))
}

/// Whether a due-index key belongs to `customer`.
pub fn due_key_is_for(k: &[u8], customer: &str) -> bool {
    k.len() == 9 + customer.len() && &k[9..] == customer.as_bytes()
}

pub fn state_key(customer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + customer.len());
    k.extend_from_slice(STATE_PREFIX);
    k.extend_from_slice(customer.as_bytes());
    k
}

/// The customer id in a state key.
pub fn customer_of(k: &[u8]) -> String {
    String::from_utf8_lossy(&k[STATE_PREFIX.len()..]).into_owned()
}

/// The keyspace name of a partition.
pub fn partition_name(partition: i32) -> String {
    format!("{PARTITION_PREFIX}{partition}")
}

/// The partition a keyspace name belongs to (`None`: not a partition's).
pub fn partition_of(name: &[u8]) -> Option<i32> {
    std::str::from_utf8(name)
        .ok()?
        .strip_prefix(PARTITION_PREFIX)?
        .parse()
        .ok()
}

/// Where a quarantined state is kept: partition, customer and the first 8
/// bytes of the bytes' SHA-256, so a batch tried again copies the same
/// bytes to the same place.
pub fn quarantine_key(partition: i32, customer: &str, raw: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(raw);
    let short: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{partition}/{customer}/{short}")
}

/// Files that mark a directory as one engine's.
const MARKERS: [(&str, [&str; 2]); 2] = [
    ("sled", ["conf", "db"]),
    ("fjall", ["version", "keyspaces"]),
];

/// Refuses a directory that holds the other engine's database (each
/// engine would otherwise open it as a new, empty one beside the other's
/// files).
pub fn refuse_other_engine(
    dir: &std::path::Path,
    wanted: &'static str,
) -> Result<(), super::StoreError> {
    for (found, files) in MARKERS {
        if found != wanted && files.iter().all(|f| dir.join(f).exists()) {
            return Err(super::StoreError::OtherEngine {
                path: dir.display().to_string(),
                found,
                wanted,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_sort_by_time_and_parse_back() {
        let mut keys: Vec<Vec<u8>> = [5, -3, i64::MAX, 0, i64::MIN]
            .iter()
            .map(|&t| due_key(t, "c-1"))
            .collect();
        keys.sort();
        let times: Vec<Millis> = keys.iter().map(|k| parse_due_key(k).unwrap().0).collect();
        assert_eq!(times, vec![i64::MIN, -3, 0, 5, i64::MAX]);
        assert_eq!(parse_due_key(&due_key(7, "ü")).unwrap(), (7, "ü".into()));
        assert!(due_key_is_for(&due_key(7, "ab"), "ab"));
        assert!(!due_key_is_for(&due_key(7, "ab"), "a"));
        let (start, end) = due_range(0, 5);
        assert!(due_key(0, "x") >= start && due_key(5, "zzz") < end);
        assert!(due_key(6, "") >= end && due_key(-1, "zzz") < start);
        assert_eq!(parse_due_key(b"c-1"), None);
        assert_eq!(partition_of(partition_name(12).as_bytes()), Some(12));
        assert_eq!(partition_of(QUARANTINE.as_bytes()), None);
    }
}
