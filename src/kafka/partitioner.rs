//! Which input partition a customer id is produced to, computed the way
//! upstream producers compute it, so any instance can tell which partition
//! (and so which instance) holds a customer, and erasure events land on
//! the same partition as the customer's other events.

/// A key partitioner of Kafka's clients, by its librdkafka name. The
/// `_random` variants differ only for records without a key (spread at
/// random instead of all to one partition); keyed records, which is all
/// this service's inputs, go to the same partition either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// Java's default (and Kafka Streams', Kafka Connect's): murmur2 of the
    /// key, sign bit cleared, modulo the partition count.
    Murmur2Random,
    /// As `murmur2_random`; keyless records all go to one partition.
    Murmur2,
    /// librdkafka's default: CRC-32 of the key modulo the partition count.
    ConsistentRandom,
    /// As `consistent_random`; keyless records all go to one partition.
    Consistent,
    /// Go's Sarama and kafka-go (their hash partitioners): FNV-1a (32-bit)
    /// of the key, read as signed and made positive, modulo the partition
    /// count.
    Fnv1aRandom,
    /// As `fnv1a_random`; keyless records all go to one partition.
    Fnv1a,
}

impl Partitioner {
    pub const ALL: [Partitioner; 6] = [
        Self::Murmur2Random,
        Self::Murmur2,
        Self::ConsistentRandom,
        Self::Consistent,
        Self::Fnv1aRandom,
        Self::Fnv1a,
    ];

    /// The librdkafka `partitioner` setting.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Self::Murmur2Random => "murmur2_random",
            Self::Murmur2 => "murmur2",
            Self::ConsistentRandom => "consistent_random",
            Self::Consistent => "consistent",
            Self::Fnv1aRandom => "fnv1a_random",
            Self::Fnv1a => "fnv1a",
        }
    }

    /// From the librdkafka `partitioner` names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.librdkafka_name() == name)
    }

    /// The partition of `key` among `partitions` (at least 1).
    pub fn partition(self, key: &[u8], partitions: usize) -> i32 {
        let n = partitions.max(1) as u32;
        let h = match self {
            Self::Murmur2Random | Self::Murmur2 => murmur2(key) & 0x7fff_ffff,
            Self::ConsistentRandom | Self::Consistent => crc32fast::hash(key),
            Self::Fnv1aRandom | Self::Fnv1a => fnv1a(key),
        };
        (h % n) as i32
    }
}

/// Kafka's murmur2 (seed 0x9747b28c), as in the Java client's
/// `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        if rest.len() >= 3 {
            h ^= u32::from(rest[2]) << 16;
        }
        if rest.len() >= 2 {
            h ^= u32::from(rest[1]) << 8;
        }
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// FNV-1a (32-bit) as Sarama's hash partitioner uses it (and librdkafka's
/// `fnv1a`): the hash read as a signed integer, made positive.
pub fn fnv1a(data: &[u8]) -> u32 {
    let h = data.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (h as i32).wrapping_abs() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_partitions_stay_in_range() {
        for p in Partitioner::ALL {
            assert_eq!(Partitioner::parse(p.librdkafka_name()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.librdkafka_name()));
        }
        assert_eq!(Partitioner::parse("random"), None);
        // librdkafka's own unit test values (rdfnv1a.c).
        assert_eq!(fnv1a(b"kafka"), 0x0d33_c4e1);
        assert_eq!(fnv1a(b"giberish123456789"), 0x77a5_8295);
        for p in Partitioner::ALL {
            let mut seen = [0u32; 7];
            for i in 0..7000 {
                let k = format!("c-{i}");
                let part = p.partition(k.as_bytes(), 7);
                assert_eq!(part, p.partition(k.as_bytes(), 7), "stable");
                seen[part as usize] += 1;
            }
            // Spread over every partition, roughly evenly.
            assert!(
                seen.iter().all(|&n| (800..1200).contains(&n)),
                "{p:?}: {seen:?}"
            );
        }
    }
}
