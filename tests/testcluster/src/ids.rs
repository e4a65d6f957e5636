//! Server-made identifiers: uids, `generateName` suffixes, bearer tokens, timestamps.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// 64 unpredictable bits; std's hasher keys are seeded from the OS per `RandomState`.
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// A version 4 UUID in its canonical text form, as `metadata.uid` is.
pub fn uid() -> String {
    let a = random_u64();
    let b = random_u64();
    let hi = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
    let lo = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// The alphabet the API server uses for generated name suffixes (no vowels, no look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `n` random characters from the API server's suffix alphabet.
pub fn suffix(n: usize) -> String {
    let mut r = random_u64();
    let mut out = String::with_capacity(n);
    for i in 0..n {
        if i > 0 && i % 12 == 0 {
            r = random_u64();
        }
        out.push(ALPHANUMS[(r % ALPHANUMS.len() as u64) as usize] as char);
        r /= ALPHANUMS.len() as u64;
    }
    out
}

/// A fresh 32-hex-character secret.
pub fn token() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// Now, in the RFC 3339 form with seconds that Kubernetes timestamps use.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Seconds since `ts` (an RFC 3339 timestamp), or `None` when it does not parse.
pub fn age_seconds(ts: &str) -> Option<i64> {
    let t: jiff::Timestamp = ts.parse().ok()?;
    Some(jiff::Timestamp::now().as_second() - t.as_second())
}

/// The human age kubectl shows: `5s`, `3m12s`, `4h`, `2d3h`.
pub fn human_age(ts: &str) -> String {
    let Some(s) = age_seconds(ts) else {
        return "<unknown>".to_string();
    };
    let s = s.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10800 => format!("{}m", s / 60),
        10800..28800 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        28800..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_v4_and_distinct() {
        let a = uid();
        let b = uid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn suffixes_use_the_server_alphabet() {
        let s = suffix(30);
        assert_eq!(s.len(), 30);
        assert!(s.bytes().all(|c| ALPHANUMS.contains(&c)), "{s}");
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age("not a time"), "<unknown>");
        let t = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(200);
        assert_eq!(human_age(&t.to_string()), "3m20s");
    }
}
