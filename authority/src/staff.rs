//! Staff accounts for the embedded sign-in: an argon2id password hash and a TOTP secret
//! per account, created with `dp3t-authority user add`.
//!
//! Sign-in is two steps (password, then a one-time password from an authenticator app),
//! and both are throttled per account name in memory: after [`MAX_FAILURES`] failures in
//! [`THROTTLE_WINDOW_SECONDS`], further attempts for that name are refused until the
//! window ends. An unknown name costs the same argon2 work as a known one, so response
//! times do not tell which names exist.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;

use crate::db::{Db, StaffRow};
use crate::totp;
use crate::{Error, Result};

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Failed sign-in steps allowed per account name per window.
pub const MAX_FAILURES: u32 = 5;
/// The throttling window.
pub const THROTTLE_WINDOW_SECONDS: u64 = 900;

/// Hash a password with argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane — the
/// OWASP recommendation) and a random salt; the PHC string that is stored.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Password(e.to_string()))
}

/// Check a password against a stored PHC string; any malformed hash is a mismatch.
pub fn verify_password(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Account names: 1 to 64 of letters, digits and `.`, `_`, `-`, `@`.
pub fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// What `user add` gives back: the TOTP secret to load into an authenticator app.
pub struct NewAccount {
    /// The raw secret.
    pub totp_secret: Vec<u8>,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewAccount(…)")
    }
}

/// Create an account with `password` and a fresh TOTP secret.
pub async fn add_account(db: &Db, username: &str, password: &str, now: u64) -> Result<NewAccount> {
    if !valid_username(username) {
        return Err(Error::Invalid(
            "user names are 1 to 64 letters, digits, '.', '_', '-' or '@'".into(),
        ));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::Invalid(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let phc = hash_password(password)?;
    let mut secret = vec![0u8; totp::SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    if !db.insert_staff(username, &phc, &secret, now).await? {
        return Err(Error::Invalid(format!("user {username:?} already exists")));
    }
    Ok(NewAccount {
        totp_secret: secret,
    })
}

/// Per-name failure counting, in memory.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u64, u32)>>,
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, u32)>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `name` may try now.
    pub fn allowed(&self, name: &str, now: u64) -> bool {
        let window = now / THROTTLE_WINDOW_SECONDS;
        match self.lock().get(name) {
            Some((w, n)) if *w == window => *n < MAX_FAILURES,
            _ => true,
        }
    }

    /// Count a failure for `name`.
    pub fn failed(&self, name: &str, now: u64) {
        let window = now / THROTTLE_WINDOW_SECONDS;
        let mut m = self.lock();
        if m.len() > 10_000 {
            m.retain(|_, (w, _)| *w == window);
        }
        let e = m.entry(name.to_owned()).or_insert((window, 0));
        if e.0 != window {
            *e = (window, 0);
        }
        e.1 += 1;
    }

    /// Forget `name`'s failures (after a full sign-in).
    pub fn reset(&self, name: &str) {
        self.lock().remove(name);
    }
}

/// Checks passwords with the same cost for unknown and known names.
pub struct PasswordCheck {
    dummy: String,
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordCheck")
    }
}

impl PasswordCheck {
    /// Prepare the stand-in hash used for unknown names.
    pub fn new() -> Result<PasswordCheck> {
        let mut pw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut pw);
        Ok(PasswordCheck {
            dummy: hash_password(&hex::encode(pw))?,
        })
    }

    /// True when `account` exists, is enabled and `password` is its password.
    pub fn check(&self, account: Option<&StaffRow>, password: &str) -> bool {
        match account {
            Some(a) => verify_password(&a.password_hash, password) && !a.disabled,
            None => {
                let _ = verify_password(&self.dummy, password);
                false
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterY"));
        assert!(!verify_password("not a hash", "x"));
        assert_ne!(h, hash_password("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn the_throttle_refuses_after_five_failures_in_a_window() {
        let t = Throttle::default();
        let now = 1_700_000_100 - 1_700_000_100 % THROTTLE_WINDOW_SECONDS;
        for _ in 0..MAX_FAILURES {
            assert!(t.allowed("alice", now));
            t.failed("alice", now);
        }
        assert!(!t.allowed("alice", now + 10));
        assert!(t.allowed("bob", now));
        assert!(t.allowed("alice", now + THROTTLE_WINDOW_SECONDS));
        t.reset("alice");
        assert!(t.allowed("alice", now));
    }

    #[test]
    fn user_names_are_restricted() {
        assert!(valid_username("alice.b@ha-1"));
        for bad in ["", "a b", "ä", "<x>", &"a".repeat(65)] {
            assert!(!valid_username(bad), "{bad}");
        }
    }
}
