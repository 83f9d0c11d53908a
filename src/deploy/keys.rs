//! ed25519 key files: the secret key (hex, 64 characters, mode 0600) made by `vigil keygen`
//! and kept on the host, and the public key (hex, `<file>.pub`) given to devices as
//! `deploy.trusted_keys`.

use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

pub use crate::model::hex;

fn unhex<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let text = text.trim();
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("expected {} hex characters, found {:?}", 2 * N, shorten(text)));
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

/// The first 20 characters of `s` (not bytes: a key file may hold anything).
fn shorten(s: &str) -> String {
    match s.char_indices().nth(20) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// A public key written as 64 hex characters. A weak key (one of small order, such as all
/// zeros) is refused: a signature can be made to "verify" under it without any secret key.
pub fn parse_public(text: &str) -> Result<VerifyingKey, String> {
    let bytes = unhex::<32>(text)?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 public key: {e}"))?;
    if key.is_weak() {
        return Err("a weak ed25519 public key (of small order): anyone could sign for it".into());
    }
    Ok(key)
}

/// Makes a key pair from the operating system's randomness and writes `path` (secret) and
/// `path.pub`; refuses to overwrite an existing secret key.
pub fn generate(path: &Path) -> Result<(PathBuf, VerifyingKey), String> {
    if path.exists() {
        return Err(format!("{} exists; refusing to overwrite a key", path.display()));
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    write_private(path, &hex(key.as_bytes())).map_err(|e| format!("{}: {e}", path.display()))?;
    let public = PathBuf::from(format!("{}.pub", path.display()));
    std::fs::write(&public, format!("{}\n", hex(key.verifying_key().as_bytes())))
        .map_err(|e| format!("{}: {e}", public.display()))?;
    Ok((public, key.verifying_key()))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(f, "{text}")
}

/// The largest key file read: a key is one line of 64 hex digits.
const MAX_KEY_FILE: u64 = 4096;

/// Reads a secret key file written by [`generate`].
pub fn read_secret(path: &Path) -> Result<SigningKey, String> {
    let text = crate::files::read_text_capped(path, MAX_KEY_FILE).map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes = unhex::<32>(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Reads a public key file (`<key>.pub`).
pub fn read_public(path: &Path) -> Result<VerifyingKey, String> {
    let text = crate::files::read_text_capped(path, MAX_KEY_FILE).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_public(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_files() {
        let dir = std::env::temp_dir().join(format!("vigil-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("deploy.key");
        let (public_path, public) = generate(&path).unwrap();
        assert_eq!(read_secret(&path).unwrap().verifying_key(), public);
        assert_eq!(read_public(&public_path).unwrap(), public);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(generate(&path).unwrap_err().contains("refusing to overwrite"));
        assert!(parse_public("abc").unwrap_err().contains("expected 64 hex characters"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn weak_and_garbled_public_keys_are_refused() {
        // The identity point (all zeros but the first byte = 1) and the all-zero encoding
        // both have small order.
        let identity = format!("01{}", "00".repeat(31));
        for weak in ["00".repeat(32), identity] {
            assert!(parse_public(&weak).unwrap_err().contains("weak ed25519 public key"), "{weak}");
        }
        // Non-ASCII text is reported, shortened by characters, without a panic.
        let odd = "é".repeat(40);
        let e = parse_public(&odd).unwrap_err();
        assert!(e.contains("expected 64 hex characters") && e.contains(&"é".repeat(20)), "{e}");
        assert!(!e.contains(&"é".repeat(21)), "{e}");
        let public = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        assert_eq!(parse_public(&hex(public.as_bytes())).unwrap(), public);
    }
}
