//! The generators' source of randomness: SplitMix64, seeded once per case so that any case
//! can be replayed from its seed alone, and the building blocks every target draws from
//! (lengths skewed towards small, text from alphabets chosen to trip parsers, byte-wise
//! mutation).
//!
//! SplitMix64 rather than a crate: eight lines, deterministic across platforms and
//! versions, and statistical quality is not what finds parser bugs.

/// A deterministic pseudo-random stream.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

/// SplitMix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function: a bijection that scrambles every bit.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of case `index` of a run seeded with `base`.
pub(crate) fn case_seed(base: u64, index: u64) -> u64 {
    mix(base.wrapping_add(index.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// Characters that parsers treat specially, or that break naive byte slicing.
const PUNCTUATION: &[char] = &[
    '-', '-', '-', '=', '=', ':', ':', '|', '{', '}', '[', ']', '"', '\\', '.', ',', '/', '+', '_',
    '\'', '@', '#', '!', '*',
];
const BLANKS: &[char] = &[
    ' ', ' ', ' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{a0}', '\u{2028}', '\u{3000}',
];
const ODD: &[char] = &[
    '\0',
    '\u{1b}',
    '\u{7f}',
    'é',
    'ß',
    '∂',
    'ǅ',
    '🦀',
    '\u{feff}',
    '\u{301}',
    '\u{202e}',
    '\u{fffd}',
    '\u{10ffff}',
    '٣',
    '１',
];

impl Rng {
    /// A stream that starts from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        // Lemire's multiply-shift: no modulo bias worth caring about, no division.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A number in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True once in `n` times on average.
    pub(crate) fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A length up to `max`, skewed towards small: a uniform number of bits first, so that
    /// 0..4 is as likely as 1000..2000.
    pub(crate) fn len(&mut self, max: usize) -> usize {
        let bits = usize::BITS - max.leading_zeros();
        let cap = 1usize
            .checked_shl(self.below(bits as usize + 1) as u32)
            .unwrap_or(usize::MAX);
        self.below(cap.min(max) + 1)
    }

    /// Random bytes, up to `max` of them.
    pub(crate) fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.len(max);
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// One character, mostly a letter or digit, often punctuation or a blank, sometimes
    /// something odd (NUL, a combining mark, a BOM, a character of four bytes).
    pub(crate) fn char(&mut self) -> char {
        match self.below(20) {
            0..=8 => *self.pick(&[
                'a', 'b', 'c', 'e', 'l', 'n', 'p', 'r', 's', 't', 'x', 'z', '0', '1', '3', '8',
                '9', 'A', 'F', 'T', 'E', 'L',
            ]),
            9..=13 => *self.pick(PUNCTUATION),
            14..=16 => *self.pick(BLANKS),
            17 => char::from(self.next_u64() as u8 & 0x7f),
            18 => char::from_u32(self.next_u64() as u32 % 0x11_0000).unwrap_or('\u{fffd}'),
            _ => *self.pick(ODD),
        }
    }

    /// Text of up to `max` characters from [`char`](Self::char).
    pub(crate) fn text(&mut self, max: usize) -> String {
        let n = self.len(max);
        (0..n).map(|_| self.char()).collect()
    }

    /// A Kubernetes-like name: lowercase letters, digits and dashes, 1 to 30 of them.
    pub(crate) fn name(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
        let n = self.between(1, 30);
        let mut name: String = (0..n)
            .map(|_| char::from(*self.pick(&ALPHABET[..ALPHABET.len() - 11])))
            .collect();
        for _ in 0..self.below(n) {
            let at = self.below(n);
            name.replace_range(at..=at, &char::from(*self.pick(ALPHABET)).to_string());
        }
        name
    }

    /// A session id: 32 lowercase hex digits.
    pub(crate) fn session_id(&mut self) -> String {
        format!("{:016x}{:016x}", self.next_u64(), self.next_u64())
    }

    /// Edits `data` in place one to eight times: flip, insert, delete, duplicate or
    /// overwrite bytes, splice in one of `tokens`, or cut the end off.
    pub(crate) fn mutate(&mut self, data: &mut Vec<u8>, tokens: &[&[u8]]) {
        for _ in 0..self.between(1, 8) {
            let len = data.len();
            let at = self.below(len + 1);
            match self.below(9) {
                0 if at < len => data[at] ^= 1 << self.below(8),
                1 if at < len => data[at] = self.next_u64() as u8,
                2 => data.insert(at, self.next_u64() as u8),
                3 if at < len => {
                    let end = self.between(at, len);
                    data.drain(at..end);
                }
                4 if at < len => {
                    let end = self.between(at, len.min(at + 64));
                    let copy = data[at..end].to_vec();
                    let to = self.below(len + 1);
                    data.splice(to..to, copy);
                }
                5 | 6 if !tokens.is_empty() => {
                    let token = self.pick(tokens).to_vec();
                    data.splice(at..at, token);
                }
                7 => data.truncate(at),
                _ => {
                    let c = self.char().to_string();
                    data.splice(at..at, c.bytes());
                }
            }
        }
    }

    /// [`mutate`](Self::mutate) on text; bytes that are no longer UTF-8 become U+FFFD, as
    /// the agent's own readers make them.
    pub(crate) fn mutate_text(&mut self, text: &str, tokens: &[&str]) -> String {
        let tokens: Vec<&[u8]> = tokens.iter().map(|t| t.as_bytes()).collect();
        let mut bytes = text.as_bytes().to_vec();
        self.mutate(&mut bytes, &tokens);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Bytes shown as a byte string literal, for failure messages.
pub(crate) struct Bytes(pub(crate) Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_seeds_differ() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_ne!(case_seed(1, 0), case_seed(1, 1));
        assert_ne!(case_seed(1, 0), case_seed(2, 0));
    }

    #[test]
    fn draws_stay_in_range() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            assert!(rng.below(3) < 3);
            assert!((5..=9).contains(&rng.between(5, 9)));
            assert!(rng.len(100) <= 100);
            assert!(rng.len(0) == 0);
            let name = rng.name();
            assert!(!name.is_empty() && name.len() <= 30, "{name:?}");
            assert!(telepolice_agent::telepresence::is_session_id(
                &rng.session_id()
            ));
        }
    }
}
