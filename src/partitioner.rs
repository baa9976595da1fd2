//! Kafka partitioners, byte-compatible with the producers that placed Sunbird's events: the
//! Java client's murmur2 (librdkafka's `murmur2_random`) and Samza's `abs(hashCode) % n`.

/// Kafka's murmur2, exactly as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ len as u32;
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
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for a keyed record.
pub fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Java's `String.hashCode` (over UTF-16 code units).
pub fn java_hashcode(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// Samza's placement: `abs(key.hashCode()) % partitions`, with `abs(i32::MIN)` taken as 0.
pub fn java_hashcode_partition(key: &str, partitions: i32) -> i32 {
    let h = java_hashcode(key);
    let a = if h == i32::MIN { 0 } else { h.abs() };
    a % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by the Java client itself (kafka-clients 4.1.1,
    /// `Utils.murmur2` and `Utils.toPositive(..) % 16`); see scripts/partitioner-vectors.
    #[test]
    fn murmur2_matches_the_java_client() {
        for (key, hash, p16) in crate::partitioner::vectors::MURMUR2 {
            assert_eq!(murmur2(key.as_bytes()), *hash, "{key}");
            assert_eq!(murmur2_partition(key.as_bytes(), 16), *p16, "{key}");
        }
    }

    /// Values printed by `String.hashCode()` on a JVM, ASCII and non-ASCII.
    #[test]
    fn java_hashcode_matches_the_jvm() {
        for (key, hash, p16) in crate::partitioner::vectors::HASHCODE {
            assert_eq!(java_hashcode(key), *hash, "{key}");
            assert_eq!(java_hashcode_partition(key, 16), *p16, "{key}");
        }
        assert_eq!(java_hashcode(""), 0);
    }

    #[test]
    fn min_value_is_taken_as_zero() {
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        assert_eq!(java_hashcode("polygenelubricants"), i32::MIN);
        assert_eq!(java_hashcode_partition("polygenelubricants", 7), 0);
    }
}

#[cfg(test)]
#[path = "partitioner_vectors.rs"]
mod vectors;
