//! The agent's identity: its own static X25519 key pair, apart from the pre-shared key. The
//! pre-shared key says "a dtcprobe agent or peer of this deployment" (and may be shared by every
//! agent); the static key says "this agent". The agent proves it holds the private half in every
//! handshake (Noise `NXpsk0`: the `s, es` tokens of its answer, see [`super::channel`]); the near
//! side compares the public half with the pin it was given (`--agent-pubkey`, a matrix zone's
//! `agent_pubkey`), so a forwarder holding the pre-shared key (or one that passes the peer's
//! connection on to another agent of the same deployment) cannot answer for the agent it was
//! aimed at.
//!
//! The identity file holds the private key as 64 hex digits and a newline (the format of the
//! pre-shared key file, loaded under the same rules: owner-only, a regular file, enough entropy).
//! `dtcprobe keygen --identity` makes one and prints the public key and its fingerprint.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use thiserror::Error;

use super::auth::{check_key_material, hex_decode, hex_encode, read_key_file, KeyError};

/// Bytes in an X25519 key (private or public).
pub const STATIC_KEY_LEN: usize = 32;

/// An agent's public key: what a near side pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentPublicKey([u8; STATIC_KEY_LEN]);

/// Why a pin (`--agent-pubkey`, `agent_pubkey`) is not an agent public key.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("not an agent public key: expected the 64 hex digits `dtcprobe keygen --identity` and the agent's start line print (got {got})")]
pub struct PinError {
    got: String,
}

impl AgentPublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<AgentPublicKey> {
        Some(AgentPublicKey(bytes.try_into().ok()?))
    }

    /// The 64 hex digits (surrounding whitespace ignored; an `agent-pubkey:` style prefix is not).
    pub fn parse(text: &str) -> Result<AgentPublicKey, PinError> {
        let text = text.trim();
        let described = if text.len() == 2 * STATIC_KEY_LEN {
            "64 characters that are not all hex digits".to_string()
        } else {
            format!("{} characters", text.chars().count())
        };
        hex_decode(text)
            .and_then(|b| AgentPublicKey::from_bytes(&b))
            .ok_or(PinError { got: described })
    }

    pub fn as_bytes(&self) -> &[u8; STATIC_KEY_LEN] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }

    /// A short form for eyes and logs: `SHA256:` and the first 16 hex digits of the key's SHA-256,
    /// in groups of four. Pins take the whole key, never this.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0);
        let hex = hex_encode(&digest[..8]);
        let groups: Vec<&str> = (0..4).map(|i| &hex[i * 4..i * 4 + 4]).collect();
        format!("SHA256:{}", groups.join("-"))
    }
}

impl fmt::Display for AgentPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for AgentPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentPublicKey({})", self.fingerprint())
    }
}

/// The agent's static key pair. Its `Debug` never shows the private half.
#[derive(Clone)]
pub struct AgentIdentity {
    private: [u8; STATIC_KEY_LEN],
    public: AgentPublicKey,
}

impl fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AgentIdentity(<private redacted>, {})",
            self.public.fingerprint()
        )
    }
}

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error("X25519: {0}")]
    Dh(String),
}

impl AgentIdentity {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> Result<AgentIdentity, IdentityError> {
        let mut private = [0u8; STATIC_KEY_LEN];
        getrandom::fill(&mut private).map_err(|e| IdentityError::Random(e.to_string()))?;
        AgentIdentity::from_private(private)
    }

    /// The key pair of a private key (the public half computed with snow's own X25519).
    pub fn from_private(private: [u8; STATIC_KEY_LEN]) -> Result<AgentIdentity, IdentityError> {
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .ok_or_else(|| IdentityError::Dh("no Curve25519 in this build".into()))?;
        dh.set(&private);
        let public = AgentPublicKey::from_bytes(dh.pubkey())
            .ok_or_else(|| IdentityError::Dh("unexpected public key length".into()))?;
        Ok(AgentIdentity { private, public })
    }

    /// Reads an identity file: the rules of [`super::Key::load`] (a regular, owner-only file of
    /// at most 4 KiB), then exactly 64 hex digits of random-looking bytes.
    pub fn load(path: &Path) -> Result<AgentIdentity, KeyError> {
        let shown = path.display().to_string();
        let bytes = read_key_file(path)?;
        AgentIdentity::from_file_bytes(&bytes, &shown)
    }

    /// An identity file's contents (surrounding whitespace ignored).
    pub fn from_file_bytes(bytes: &[u8], origin: &str) -> Result<AgentIdentity, KeyError> {
        let weak = |problem: &str| KeyError::WeakIdentity {
            path: origin.to_string(),
            problem: problem.to_string(),
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| weak("not text"))?
            .trim();
        let decoded = hex_decode(text).ok_or_else(|| weak("not hex digits"))?;
        let private: [u8; STATIC_KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| weak(&format!("{} bytes, not {STATIC_KEY_LEN}", decoded.len())))?;
        check_key_material(&private).map_err(|w| weak(&w.to_string()))?;
        AgentIdentity::from_private(private).map_err(|e| weak(&e.to_string()))
    }

    /// What an identity file holds: the private key, 64 hex digits and a newline.
    pub fn file_text(&self) -> String {
        format!("{}\n", hex_encode(&self.private))
    }

    pub fn public(&self) -> AgentPublicKey {
        self.public
    }

    /// For the Noise handshake only.
    pub(super) fn private(&self) -> &[u8; STATIC_KEY_LEN] {
        &self.private
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_rfc7748_and_prints_short() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let private =
            hex_decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
        let id = AgentIdentity::from_private(private.try_into().unwrap()).unwrap();
        assert_eq!(
            id.public().to_hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        let fp = id.public().fingerprint();
        assert!(
            fp.starts_with("SHA256:") && fp.len() == "SHA256:".len() + 19,
            "{fp}"
        );
        assert!(
            !format!("{id:?}").contains("77076d"),
            "Debug must not leak the private key"
        );
        // The file round-trips; the public key parses back from its hex.
        let back = AgentIdentity::from_file_bytes(id.file_text().as_bytes(), "f").unwrap();
        assert_eq!(back.public(), id.public());
        assert_eq!(
            AgentPublicKey::parse(&id.public().to_hex()).unwrap(),
            id.public()
        );
    }

    #[test]
    fn pins_and_identity_files_are_checked() {
        for bad in ["", "abc", &"g".repeat(64), &"ab".repeat(33)] {
            assert!(AgentPublicKey::parse(bad).is_err(), "{bad}");
        }
        let e = AgentPublicKey::parse("SHA256:1234")
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        let weak: &[&[u8]] = &[
            b"",
            &[b'a'; 64],
            &[b'0'; 64],
            b"not hex at all",
            &[b'1'; 62],
        ];
        for bytes in weak {
            assert!(
                matches!(
                    AgentIdentity::from_file_bytes(bytes, "f"),
                    Err(KeyError::WeakIdentity { .. })
                ),
                "{bytes:?}"
            );
        }
        let fresh = AgentIdentity::generate().unwrap();
        assert_ne!(fresh.public(), AgentIdentity::generate().unwrap().public());
    }
}
