//! One-time codes: 12 decimal digits drawn uniformly from the OS CSPRNG, shown as three
//! groups of four, and stored only as HMAC-SHA256 under a server secret.
//!
//! Why a keyed hash and not a plain one: 10^12 codes can be hashed exhaustively in
//! minutes, so a stolen database with plain hashes would give away every live code. With
//! the key kept in a file outside the database (or in a secret store), the rows alone
//! reveal nothing. Why 12 digits: the brute-force arithmetic in [`crate::ratelimit`].

use std::path::Path;

use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Number of digits of a code.
pub const CODE_DIGITS: usize = 12;
/// Number of distinct codes, 10^12.
pub const CODE_SPACE: u64 = 1_000_000_000_000;

/// File name of the code-hashing secret in the data directory.
pub const CODE_KEY_FILE: &str = "code-hmac.key";

/// A code as 12 ASCII digits (the canonical form that is hashed).
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Code(…)")
    }
}

impl Code {
    /// Draw a uniform code: rejection sampling of 64-bit values, so no code is likelier.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Code {
        // Largest multiple of 10^12 that fits in u64; values above it are redrawn
        // (probability about 5e-8 per draw).
        const LIMIT: u64 = u64::MAX - (u64::MAX % CODE_SPACE);
        loop {
            let v = rng.next_u64();
            if v < LIMIT {
                return Code(format!("{:012}", v % CODE_SPACE));
            }
        }
    }

    /// Read a code typed by a person or sent by an app: digits, with any spaces or
    /// dashes between them. Anything else, or a count other than 12, is `None`.
    pub fn parse(input: &str) -> Option<Code> {
        if input.len() > 64 {
            return None;
        }
        let mut digits = String::with_capacity(CODE_DIGITS);
        for c in input.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' => {}
                _ => return None,
            }
        }
        (digits.len() == CODE_DIGITS).then_some(Code(digits))
    }

    /// The 12 digits.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// The display form, `1234 5678 9012`.
    pub fn grouped(&self) -> String {
        let d = &self.0;
        format!("{} {} {}", &d[0..4], &d[4..8], &d[8..12])
    }
}

/// The server secret that keys the code hashes.
pub struct CodeHasher {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for CodeHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeHasher(…)")
    }
}

impl CodeHasher {
    /// A hasher with `key`.
    pub fn new(key: [u8; 32]) -> CodeHasher {
        CodeHasher {
            key: Zeroizing::new(key),
        }
    }

    /// Load the key from `path` (64 hex digits), creating it from the OS CSPRNG when the
    /// file does not exist. Returns the hasher and whether the file was created.
    pub fn load_or_create(path: &Path) -> Result<(CodeHasher, bool)> {
        if path.exists() {
            let text =
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?);
            let bytes = Zeroizing::new(
                hex::decode(text.trim())
                    .map_err(|_| Error::Key(format!("{}: not hex", path.display())))?,
            );
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                Error::Key(format!(
                    "{}: must hold 32 bytes (64 hex digits)",
                    path.display()
                ))
            })?;
            return Ok((CodeHasher::new(key), false));
        }
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let text = Zeroizing::new(format!("{}\n", hex::encode(key)));
        crate::token::write_private_file(path, text.as_bytes())?;
        Ok((CodeHasher::new(key), true))
    }

    /// HMAC-SHA256 of the code's digits: the only form in which a code is stored.
    pub fn hash(&self, code: &Code) -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_slice()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(code.0.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generated_codes_have_twelve_digits_and_group_in_fours() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let c = Code::generate(&mut rng);
            assert_eq!(c.digits().len(), 12);
            assert!(c.digits().bytes().all(|b| b.is_ascii_digit()));
            let g = c.grouped();
            assert_eq!(g.len(), 14);
            assert_eq!(Code::parse(&g), Some(c));
        }
    }

    #[test]
    fn digits_are_roughly_uniform() {
        // 12 000 draws give 144 000 digits; each digit value should appear about 14 400
        // times. A bias of a few percent (say, from a plain modulo of a 32-bit value)
        // would show; the bound is 6 standard deviations.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0u32; 10];
        for _ in 0..12_000 {
            for b in Code::generate(&mut rng).digits().bytes() {
                counts[usize::from(b - b'0')] += 1;
            }
        }
        for c in counts {
            assert!((13_680..=15_120).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn parsing_accepts_spaces_and_dashes_only() {
        assert_eq!(
            Code::parse("1234-5678-9012").unwrap().digits(),
            "123456789012"
        );
        assert_eq!(
            Code::parse(" 123456789012 ").unwrap().digits(),
            "123456789012"
        );
        for bad in [
            "12345678901",
            "1234567890123",
            "12345678901a",
            "１２３４５６７８９０１２",
            "",
        ] {
            assert!(Code::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_hash_depends_on_the_key_and_the_code() {
        let c = Code::parse("123456789012").unwrap();
        let d = Code::parse("123456789013").unwrap();
        let a = CodeHasher::new([1; 32]);
        let b = CodeHasher::new([2; 32]);
        assert_ne!(a.hash(&c), b.hash(&c));
        assert_ne!(a.hash(&c), a.hash(&d));
        assert_eq!(a.hash(&c), CodeHasher::new([1; 32]).hash(&c));
        assert!(!format!("{c:?}").contains("1234"));
    }

    #[test]
    fn the_key_file_is_created_once_and_reread() {
        let dir = std::env::temp_dir().join(format!("dp3t-auth-codekey-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(CODE_KEY_FILE);
        let (h1, created) = CodeHasher::load_or_create(&p).unwrap();
        assert!(created);
        let (h2, created) = CodeHasher::load_or_create(&p).unwrap();
        assert!(!created);
        let c = Code::parse("000000000001").unwrap();
        assert_eq!(h1.hash(&c), h2.hash(&c));
        std::fs::write(&p, "abcd").unwrap();
        assert!(CodeHasher::load_or_create(&p).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
