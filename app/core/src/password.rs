//! Passwords as Argon2id hashes in the PHC string format (salted, slow), and the random tokens
//! and digests sessions are made of.
//!
//! Parameters: Argon2id, m = 19,456 KiB, t = 2, p = 1, OWASP's Password Storage Cheat Sheet's
//! first Argon2id option and what every stored hash already uses (about 22 ms here). The app
//! hashes into buffers it allocates once (`Memory`) rather than letting argon2 allocate 19 MiB
//! per hash: with many hashes in flight glibc keeps the freed blocks in per-thread arenas and
//! the process grew to gigabytes. `verify`/`hash` keep argon2's own allocating path for xtask.

use argon2::password_hash::{
    Output, ParamsString, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use sha2::{Digest, Sha256};

/// Memory cost (KiB, which is Argon2 blocks) of new hashes, and the most a stored hash may ask
/// for: a larger one is refused, never allocated, so a hostile PHC string cannot cost 4 GiB.
pub const M_COST: u32 = 19_456;
/// Passes over memory of new hashes.
pub const T_COST: u32 = 2;

/// A real Argon2id hash of nothing anyone knows, with the current parameters: an unknown email
/// (or a user without a password) costs as much as a wrong password.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Ww3bQf2pGqu2m/0Z0dIqEdydItpwDaJvXnJbn0pEzRw";

fn current_params() -> Params {
    Params::new(M_COST, T_COST, 1, None).expect("valid Argon2 parameters")
}

/// One hash's working memory, allocated once and reused: Argon2 writes every block before it
/// reads it, so a buffer dirty from the last hash gives the same result as a fresh one.
pub struct Memory(Vec<Block>);

impl Memory {
    /// `M_COST` blocks (19 MiB), enough for every parameter set we accept.
    pub fn new() -> Memory {
        Memory(vec![Block::default(); M_COST as usize])
    }
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

/// What a stored hash says about a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    NoMatch,
    /// Not a hash we can check: malformed, another algorithm, or more memory than `M_COST`.
    Unusable,
}

/// Checks `password` against the stored PHC string in `memory`, without allocating.
pub fn verify_in(memory: &mut Memory, password: &str, stored: &str) -> Verdict {
    let Ok(hash) = PasswordHash::new(stored) else {
        return Verdict::Unusable;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return Verdict::Unusable;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return Verdict::Unusable,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return Verdict::Unusable;
    };
    if params.m_cost() > M_COST || params.block_count() > memory.0.len() {
        return Verdict::Unusable;
    }
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return Verdict::Unusable;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return Verdict::Unusable;
    };
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return Verdict::Unusable;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory.0[..])
        .is_err()
    {
        return Verdict::Unusable;
    }
    // `Output`'s equality is constant-time.
    match Output::new(out) {
        Ok(computed) if computed == expected => Verdict::Match,
        Ok(_) => Verdict::NoMatch,
        Err(_) => Verdict::Unusable,
    }
}

/// A new PHC string for `password` with the current parameters, hashed in `memory`.
pub fn hash_in(memory: &mut Memory, password: &str) -> Result<String, argon2::Error> {
    let salt = random_bytes::<16>();
    let params = current_params();
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut memory.0[..])?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| argon2::Error::SaltTooShort)?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|_| argon2::Error::OutputTooShort)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|_| argon2::Error::OutputTooShort)?),
    };
    Ok(phc.to_string())
}

/// Whether a stored hash should be replaced after a successful sign-in (the password is at
/// hand then): another algorithm or other parameters than the current ones.
pub fn needs_rehash(stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return true;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return true;
    };
    hash.algorithm != argon2::ARGON2ID_IDENT
        || params.m_cost() != M_COST
        || params.t_cost() != T_COST
        || params.p_cost() != 1
}

/// A PHC string such as `$argon2id$v=19$m=19456,t=2,p=1$…`: the parameters travel with the
/// hash, so older hashes keep verifying when the defaults change.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
}

/// Whether `password` matches the stored PHC string; a malformed hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// 32 random bytes as 64 hex digits: session tokens, CSRF tokens, one-off passwords.
pub fn random_token() -> String {
    hex(&random_bytes::<32>())
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The operating system's generator; without it nothing secret can be made, so stop.
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let first = hash("correct horse").unwrap();
        let second = hash("correct horse").unwrap();
        assert_ne!(first, second);
        assert!(first.starts_with("$argon2id$"));
        assert!(verify("correct horse", &first));
        assert!(!verify("wrong horse", &first));
        assert!(!verify("x", "not a hash"));
    }

    #[test]
    fn reused_memory_verifies_old_and_new_hashes() {
        let mut memory = Memory::new();
        let stored = hash("correct horse").unwrap();
        assert!(stored.contains("m=19456,t=2,p=1"), "{stored}");
        // The same dirty buffer, again and again.
        for _ in 0..2 {
            assert_eq!(
                verify_in(&mut memory, "correct horse", &stored),
                Verdict::Match
            );
            assert_eq!(
                verify_in(&mut memory, "wrong horse", &stored),
                Verdict::NoMatch
            );
        }
        assert_eq!(verify_in(&mut memory, "x", DUMMY_HASH), Verdict::NoMatch);
        assert_eq!(verify_in(&mut memory, "x", "not a hash"), Verdict::Unusable);
        let fresh = hash_in(&mut memory, "new password").unwrap();
        assert!(
            fresh.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{fresh}"
        );
        assert!(
            verify("new password", &fresh),
            "argon2's own verifier accepts it"
        );
        assert!(!needs_rehash(&fresh));
        // A smaller OWASP parameter set fits the same buffer, and is due for a rehash.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(7_168, 5, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::encode_b64(b"saltsaltsaltsalt").unwrap())
        .unwrap()
        .to_string();
        assert_eq!(verify_in(&mut memory, "pw", &small), Verdict::Match);
        assert!(needs_rehash(&small));
    }

    #[test]
    fn hashes_asking_for_more_memory_are_refused_not_allocated() {
        let mut memory = Memory::new();
        let huge = DUMMY_HASH.replace("m=19456", "m=4194304");
        assert_eq!(verify_in(&mut memory, "x", &huge), Verdict::Unusable);
    }

    #[test]
    fn tokens_and_digests() {
        let token = random_token();
        assert_eq!(token.len(), 64);
        assert_ne!(token, random_token());
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
