//! GitHub's delivery signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw
//! body>`, keyed with the webhook's secret. Checked before anything in the delivery is read.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// The secrets a delivery may be signed with: the current one and, during a rotation, the
/// one before it.
pub struct Keys {
    pub current: SecretString,
    pub previous: Option<SecretString>,
}

/// Why a delivery's signature is refused (no secret material in any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not sha256= and 64 hex digits")]
    Malformed,
    #[error("X-Hub-Signature-256 matches none of the webhook's secrets")]
    Mismatch,
}

/// Whether `header` signs `body` with one of `keys`, compared in constant time.
pub fn verify(keys: &Keys, header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let digest = header
        .strip_prefix("sha256=")
        .filter(|h| h.len() == 64)
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Malformed)?;
    let signed_with = |secret: &SecretString| {
        // HMAC takes keys of any length, so building one cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&digest).is_ok()
    };
    // Both are always tried, so the time taken does not say which one matched.
    let current = signed_with(&keys.current);
    let previous = keys.previous.as_ref().is_some_and(signed_with);
    if current | previous {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn keys(current: &str, previous: Option<&str>) -> Keys {
        Keys {
            current: current.to_owned().into(),
            previous: previous.map(|p| p.to_owned().into()),
        }
    }

    #[test]
    fn githubs_documented_example_verifies() {
        assert_eq!(verify(&keys(SECRET, None), Some(SIGNATURE), BODY), Ok(()));
    }

    #[test]
    fn the_previous_secret_is_accepted_during_a_rotation() {
        assert_eq!(
            verify(&keys("the new one", Some(SECRET)), Some(SIGNATURE), BODY),
            Ok(())
        );
        assert_eq!(
            verify(&keys("the new one", None), Some(SIGNATURE), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        let k = keys(SECRET, None);
        assert_eq!(verify(&k, None, BODY), Err(SignatureError::Missing));
        for bad in [
            "",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
            "sha256=757107ea",
            "sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            &SIGNATURE.to_uppercase(),
        ] {
            assert_eq!(
                verify(&k, Some(bad), BODY),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify(&k, Some(SIGNATURE), b"Hello, World?"),
            Err(SignatureError::Mismatch),
            "one byte of the body changed"
        );
    }
}
