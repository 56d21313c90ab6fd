//! Passwords and tokens.
//!
//! Passwords are hashed with Argon2id. Switchboard issues HS256 JWTs with its own secret, and can
//! also accept tokens minted by the operator's backend (HS256 secret or RS256 public key). The
//! algorithm of each verifier is pinned by configuration and never taken from the token's header,
//! so `alg: none` and key-confusion tokens fail (RFC 8725).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use switchboard_protocol::User;

use crate::config::Config;
use crate::error::ApiError;
use crate::store::{Store, StoreError};
use crate::validate;

/// `iss` and `aud` of the tokens Switchboard issues.
const ISSUER: &str = "switchboard";
/// Longest token looked at; anything longer is refused unparsed.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token or credential was refused. Each maps to 401 / close 4003.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not a token we accept (bad shape, signature, algorithm, issuer, audience, size).
    #[error("invalid token")]
    Invalid,
    /// Signature fine, but `exp` has passed.
    #[error("token expired")]
    Expired,
    /// The token's user no longer exists.
    #[error("unknown user")]
    UnknownUser,
    /// The store could not be asked.
    #[error("store unavailable")]
    Unavailable(#[from] crate::store::StoreError),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unavailable(s) => s.into(),
            other => ApiError::unauthorized(other.to_string()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// What Switchboard reads from an external token; everything else (`exp`, `nbf`, `iss`, `aud`,
/// in any form RFC 7519 allows) is checked by the validator and otherwise ignored.
#[derive(Debug, Deserialize)]
struct ExternalClaims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
}

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// Issues and checks tokens.
pub struct Auth {
    encoding: EncodingKey,
    own: Verifier,
    external: Option<Verifier>,
    ttl_secs: u64,
}

/// Why auth could not be set up from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A key or secret is unusable.
    #[error("{0}")]
    Key(String),
}

fn now_secs() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}

/// Reads the secret from `<data>/jwt_secret`, creating it (random, mode 0600) on first start, so
/// tokens survive restarts without the operator having to configure anything.
fn load_or_create_secret(data: &Path) -> Result<String, AuthSetupError> {
    let path = data.join("jwt_secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_owned();
        if s.len() >= 32 {
            return Ok(s);
        }
        return Err(AuthSetupError::Key(format!("{} is shorter than 32 characters", path.display())));
    }
    std::fs::create_dir_all(data)
        .map_err(|e| AuthSetupError::Key(format!("creating {}: {e}", data.display())))?;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &secret)
        .map_err(|e| AuthSetupError::Key(format!("writing {}: {e}", path.display())))?;
    Ok(secret)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

impl Auth {
    /// Builds the issuer and verifiers from configuration.
    pub fn from_config(cfg: &Config) -> Result<Self, AuthSetupError> {
        let secret = match &cfg.jwt_secret {
            Some(s) if s.len() >= 32 => s.clone(),
            Some(_) => {
                return Err(AuthSetupError::Key("jwt_secret must be at least 32 characters".into()));
            }
            None => load_or_create_secret(&cfg.data)?,
        };
        let key_err = |e: jsonwebtoken::errors::Error| AuthSetupError::Key(e.to_string());
        let encoding = EncodingKey::from_secret(secret.as_bytes()).map_err(key_err)?;
        let mut own_validation = Validation::new(Algorithm::HS256);
        own_validation.set_issuer(&[ISSUER]);
        own_validation.set_audience(&[ISSUER]);
        own_validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        own_validation.leeway = 30;
        own_validation.validate_nbf = true;
        let own = Verifier {
            key: DecodingKey::from_secret(secret.as_bytes()).map_err(key_err)?,
            validation: own_validation,
        };

        let external = if let Some(secret) = &cfg.jwt_external_hs256_secret {
            Some((Algorithm::HS256, DecodingKey::from_secret(secret.as_bytes()).map_err(key_err)?))
        } else if let Some(path) = &cfg.jwt_external_rs256_public_key {
            let pem = std::fs::read(path)
                .map_err(|e| AuthSetupError::Key(format!("reading {}: {e}", path.display())))?;
            Some((Algorithm::RS256, DecodingKey::from_rsa_pem(&pem).map_err(key_err)?))
        } else {
            None
        };
        let external = external.map(|(alg, key)| {
            let mut v = Validation::new(alg);
            // A configured claim must be present, not merely correct when present.
            let mut required = vec!["exp", "sub"];
            required.extend(cfg.jwt_external_issuer.as_ref().map(|_| "iss"));
            required.extend(cfg.jwt_external_audience.as_ref().map(|_| "aud"));
            v.set_required_spec_claims(&required);
            v.leeway = 30;
            v.validate_nbf = true;
            v.validate_aud = false;
            if let Some(iss) = &cfg.jwt_external_issuer {
                v.set_issuer(&[iss]);
            }
            if let Some(aud) = &cfg.jwt_external_audience {
                v.set_audience(&[aud]);
                v.validate_aud = true;
            }
            Verifier { key, validation: v }
        });
        Ok(Auth { encoding, own, external, ttl_secs: cfg.token_ttl_secs })
    }

    /// A fresh token for `user`.
    pub fn issue(&self, user: &User) -> Result<String, ApiError> {
        let now = now_secs();
        let claims = Claims {
            sub: user.id.clone(),
            exp: now + self.ttl_secs,
            iat: Some(now),
            iss: Some(ISSUER.into()),
            aud: Some(ISSUER.into()),
            name: Some(user.username.clone()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// Checks a token and returns its user: Switchboard's own tokens must name an existing user;
    /// a valid external token creates its user on first sight.
    pub async fn verify(&self, token: &str, store: &Arc<dyn Store>) -> Result<User, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid);
        }
        match jsonwebtoken::decode::<Claims>(token, &self.own.key, &self.own.validation) {
            Ok(data) => {
                return store.user(&data.claims.sub).await?.ok_or(AuthError::UnknownUser);
            }
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                return Err(AuthError::Expired);
            }
            Err(_) => {}
        }
        let Some(ext) = &self.external else {
            return Err(AuthError::Invalid);
        };
        let data =
            jsonwebtoken::decode::<ExternalClaims>(token, &ext.key, &ext.validation).map_err(|e| match e
                .kind()
            {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let sub = data.claims.sub;
        if validate::id(&sub, "sub").is_err() {
            return Err(AuthError::Invalid);
        }
        let candidates = external_usernames(&sub, data.claims.name.as_deref());
        store.ensure_external_user(&sub, &candidates).await.map_err(|e| match e {
            StoreError::Conflict(_) | StoreError::UsernameTaken => AuthError::Invalid,
            other => AuthError::Unavailable(other),
        })
    }
}

/// Usernames to try for a new external user: the `name` claim, the `sub`, then the `sub` made
/// valid and suffixed, so a user is always created even when both are taken or malformed.
fn external_usernames(sub: &str, name: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> =
        [name, Some(sub)].into_iter().flatten().filter_map(|n| validate::username(n).ok()).collect();
    let cleaned: String = sub
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' })
        .take(24)
        .collect();
    let suffix: u32 = rand::random::<u32>() % 1_000_000;
    out.push(format!("{cleaned}-{suffix:06}"));
    out
}

/// Hashes a password with Argon2id and a random salt (CPU-heavy: call off the async threads).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(ApiError::internal)
}

/// Checks a password against a stored hash; with no hash, burns the same time against a dummy
/// one so that timing does not reveal which usernames exist.
pub fn verify_password(password: &str, hash: Option<&str>) -> bool {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let target = match hash {
        Some(h) => Some(h.to_owned()),
        None => DUMMY.get_or_init(|| hash_password("dummy password for timing").ok()).clone(),
    };
    let matches =
        target.is_some_and(|h| Argon2::default().verify_password(password.as_bytes(), h.as_str()).is_ok());
    matches && hash.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", Some(&h)));
        assert!(!verify_password("wrong horse", Some(&h)));
        assert!(!verify_password("correct horse", None));
        assert!(!verify_password("x", Some("not a phc string")));
    }

    #[test]
    fn external_usernames_always_offer_a_valid_fallback() {
        let c = external_usernames("auth0|ABC", Some("Bob"));
        assert_eq!(c[0], "bob");
        assert!(c.last().unwrap().starts_with("auth0_abc-"));
        assert!(c.iter().all(|n| validate::username(n).is_ok()));
    }
}
