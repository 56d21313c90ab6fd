//! Passwords and tokens.
//!
//! Passwords are hashed with Argon2id. Switchboard issues HS256 JWTs with its own secret, and can
//! also accept tokens minted by the operator's backend (HS256 secret or RS256 public key). The
//! algorithm of each verifier is pinned by configuration and never taken from the token's header,
//! so `alg: none` and key-confusion tokens fail (RFC 8725).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Argon2, Block, Params, Version};
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
    /// The session the token belongs to has ended (signed out).
    #[error("session ended")]
    Ended,
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
    /// The session this token belongs to (tokens issued before sessions existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
}

/// An invite to sign up: no `sub` (so it never passes as a login token), `purpose` = `invite`,
/// and optionally the one username it may register.
#[derive(Debug, Serialize, Deserialize)]
struct InviteClaims {
    purpose: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
}

/// A checked token: whose it is, which session it belongs to, and until when it is good.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The user.
    pub user: User,
    /// The session id, for Switchboard's own tokens.
    pub session: Option<String>,
    /// Until when (seconds since the epoch) REST accepts the token, leeway included: a gateway
    /// connection authenticated with it closes before then.
    pub valid_until: u64,
    /// The token's `iat`, for tokens without a session ("sign out everywhere" ends them).
    pub issued_at: Option<u64>,
}

impl Verified {
    /// Whether the token would still be accepted now as far as the store can tell (its session
    /// has not ended; without a session, the user has not signed out everywhere since it was
    /// issued): the gateway asks again while a connection lives.
    pub async fn still_valid(&self, store: &Arc<dyn Store>) -> Result<bool, StoreError> {
        match &self.session {
            Some(sid) => Ok(store.session_user(sid).await?.is_some_and(|u| u.id == self.user.id)),
            None => match check_cutoff(store, &self.user.id, self.issued_at).await {
                Ok(()) => Ok(true),
                Err(AuthError::Unavailable(e)) => Err(e),
                Err(_) => Ok(false),
            },
        }
    }
}

/// What Switchboard reads from an external token; everything else (`exp`, `nbf`, `iss`, `aud`,
/// in any form RFC 7519 allows) is checked by the validator and otherwise ignored.
#[derive(Debug, Deserialize)]
struct ExternalClaims {
    sub: String,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    name: Option<String>,
}

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// Issues and checks tokens.
pub struct Auth {
    encoding: EncodingKey,
    own: Verifier,
    external: Option<Verifier>,
    ttl_secs: u64,
    /// Own-key and external-key checks for invite tokens.
    invites: Vec<Verifier>,
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
        own_validation.leeway = LEEWAY_SECS;
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
            v.leeway = LEEWAY_SECS;
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
        let invite_validation = |alg: Algorithm| {
            let mut v = Validation::new(alg);
            v.set_required_spec_claims(&["exp"]);
            v.leeway = LEEWAY_SECS;
            v.validate_aud = false;
            v
        };
        let mut invites = vec![Verifier {
            key: DecodingKey::from_secret(secret.as_bytes()).map_err(key_err)?,
            validation: invite_validation(Algorithm::HS256),
        }];
        if let Some(ext) = &external {
            let alg = ext.validation.algorithms.first().copied().unwrap_or(Algorithm::HS256);
            invites.push(Verifier { key: ext.key.clone(), validation: invite_validation(alg) });
        }
        Ok(Auth { encoding, own, external, ttl_secs: cfg.token_ttl_secs, invites })
    }

    /// How long issued tokens live.
    pub fn ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.ttl_secs)
    }

    /// A fresh token for `user` in `session`.
    pub fn issue(&self, user: &User, session: &str) -> Result<String, ApiError> {
        let now = now_secs();
        let claims = Claims {
            sub: user.id.clone(),
            exp: now + self.ttl_secs,
            iat: Some(now),
            iss: Some(ISSUER.into()),
            aud: Some(ISSUER.into()),
            name: Some(user.username.clone()),
            sid: Some(session.to_owned()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// An invite token good for `ttl`, for one `username` when given (`switchboard invite`).
    pub fn issue_invite(&self, ttl: std::time::Duration, username: Option<&str>) -> Result<String, ApiError> {
        let claims = InviteClaims {
            purpose: "invite".into(),
            exp: now_secs() + ttl.as_secs(),
            iss: Some(ISSUER.into()),
            aud: None,
            username: username.map(str::to_owned),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// Whether `token` is an invite that lets `username` sign up (signed with Switchboard's
    /// secret or the operator's key, unexpired, and bound to this username if bound at all).
    pub fn invite_allows(&self, token: &str, username: &str) -> bool {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return false;
        }
        self.invites.iter().any(|v| {
            jsonwebtoken::decode::<InviteClaims>(token, &v.key, &v.validation).is_ok_and(|d| {
                d.claims.purpose == "invite"
                    && d.claims
                        .username
                        .as_deref()
                        .is_none_or(|u| validate::username(u).is_ok_and(|u| u == username))
            })
        })
    }

    /// Checks a token and returns its user: Switchboard's own tokens must belong to a session
    /// that has not ended; a valid external token creates its user on first sight, and is
    /// refused if it was issued before the user last signed out everywhere.
    pub async fn verify(&self, token: &str, store: &Arc<dyn Store>) -> Result<Verified, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid);
        }
        match jsonwebtoken::decode::<Claims>(token, &self.own.key, &self.own.validation) {
            Ok(data) => {
                let c = data.claims;
                let valid_until = c.exp + LEEWAY_SECS;
                let Some(sid) = c.sid else {
                    // Issued before sessions existed: good until "sign out everywhere".
                    let user = store.user(&c.sub).await?.ok_or(AuthError::UnknownUser)?;
                    check_cutoff(store, &user.id, c.iat).await?;
                    return Ok(Verified { user, session: None, valid_until, issued_at: c.iat });
                };
                let user = store.session_user(&sid).await?.ok_or(AuthError::Ended)?;
                if user.id != c.sub {
                    return Err(AuthError::Invalid);
                }
                return Ok(Verified { user, session: Some(sid), valid_until, issued_at: c.iat });
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
        let claims = data.claims;
        let sub = claims.sub;
        if validate::id(&sub, "sub").is_err() {
            return Err(AuthError::Invalid);
        }
        let candidates = external_usernames(&sub, claims.name.as_deref());
        let ext = store.ensure_external_user(&sub, &candidates).await.map_err(|e| match e {
            StoreError::Conflict(_) | StoreError::UsernameTaken => AuthError::Invalid,
            other => AuthError::Unavailable(other),
        })?;
        issued_after(ext.sessions_ended_at, claims.iat)?;
        let user = ext.user;
        Ok(Verified { user, session: None, valid_until: claims.exp + LEEWAY_SECS, issued_at: claims.iat })
    }
}

/// Refuses a token without a session issued (`iat`) before the user signed out everywhere; a
/// token without `iat` is refused once the user has ever done so.
async fn check_cutoff(store: &Arc<dyn Store>, user: &str, iat: Option<u64>) -> Result<(), AuthError> {
    issued_after(store.sessions_ended_at(user).await?, iat)
}

/// A token issued (`iat`) after the last "sign out everywhere" (`cutoff_ms`), if there was one.
fn issued_after(cutoff_ms: Option<i64>, iat: Option<u64>) -> Result<(), AuthError> {
    let Some(cutoff_ms) = cutoff_ms else {
        return Ok(());
    };
    match iat {
        Some(iat) if i128::from(iat) * 1000 > i128::from(cutoff_ms) => Ok(()),
        _ => Err(AuthError::Ended),
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

thread_local! {
    /// Argon2's working memory (19 MiB with the default parameters), kept by each hashing
    /// thread and reused: allocated and freed per hash, the allocator kept most of it after a
    /// flood (7.7 GB after 400 logins), and the peak followed the number of threads hashing.
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most Argon2 memory a stored hash may ask for (64 MiB); a hash asking more is refused
/// rather than run.
const MAX_HASH_KIB: u32 = 64 * 1024;

/// Runs Argon2 with this thread's reusable memory.
fn argon2_into(argon: &Argon2<'_>, params: &Params, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    if params.m_cost() > MAX_HASH_KIB {
        return false;
    }
    MEMORY.with(|mem| {
        let mut mem = mem.borrow_mut();
        let blocks = params.block_count();
        if mem.len() < blocks {
            mem.resize(blocks, Block::new());
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut mem[..blocks]).is_ok()
    })
}

/// Hashes a password with Argon2id (default parameters) and a random salt, as a PHC string.
/// CPU-heavy: call it on the hashing pool ([`crate::hashing`]).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let params = Params::default();
    let argon = Argon2::new(argon2::Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    if !argon2_into(&argon, &params, password.as_bytes(), &salt, &mut out) {
        return Err(ApiError::internal("argon2 failed"));
    }
    let phc = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(ApiError::internal)?,
        salt: Some(Salt::new(&salt).map_err(ApiError::internal)?),
        hash: Some(Output::new(&out).map_err(ApiError::internal)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches a PHC string, comparing in constant time.
fn matches(password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else { return false };
    let Ok(params) = Params::try_from(&hash) else { return false };
    let Ok(algorithm) = argon2::Algorithm::try_from(hash.algorithm.as_str()) else { return false };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    argon2_into(&argon, &params, password.as_bytes(), salt, &mut out)
        && Output::new(&out).is_ok_and(|computed| &computed == expected)
}

/// Checks a password against a stored hash; with no hash, burns the same time against a dummy
/// one so that timing does not reveal which usernames exist.
pub fn verify_password(password: &str, hash: Option<&str>) -> bool {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let target = match hash {
        Some(h) => Some(h.to_owned()),
        None => DUMMY.get_or_init(|| hash_password("dummy password for timing").ok()).clone(),
    };
    let ok = target.is_some_and(|h| matches(password, &h));
    ok && hash.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let h = hash_password("correct horse").unwrap();
        // The crate's own verifier agrees, so stored hashes stay standard PHC strings.
        use argon2::{PasswordHasher, PasswordVerifier};
        assert!(Argon2::default().verify_password(b"correct horse", h.as_str()).is_ok());
        let theirs = Argon2::default().hash_password(b"older hash").unwrap().to_string();
        assert!(verify_password("older hash", Some(&theirs)));
        assert!(!verify_password("other", Some(&theirs)));
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
