//! Who is connecting: the token's three carriers and its validation.
//!
//! HS256 is pinned here; the token header's `alg` is never trusted. `exp`
//! and `sub` are required. Tokens are never logged.

use std::time::Duration;

use http::{HeaderMap, Uri, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use natter_core::UserId;
use natter_protocol::{BEARER_SUBPROTOCOL_PREFIX, SUBPROTOCOL};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("unknown user")]
    UnknownUser,
    /// The user could not be looked up: a server fault, not the client's.
    #[error("cannot check the user: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The close code: 1008 (do not retry) unless the fault is ours.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::Unavailable(_) => natter_protocol::close::INTERNAL_ERROR,
            _ => natter_protocol::close::POLICY_VIOLATION,
        }
    }

    /// The close reason the contract names.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => natter_protocol::close::REASON_AUTH_REQUIRED,
            Self::Unavailable(_) => "Server error, retry later",
            _ => natter_protocol::close::REASON_AUTH_FAILED,
        }
    }
}

/// A validated token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: UserId,
    /// Epoch seconds.
    pub expires_at: u64,
}

/// Validates tokens; built once per server.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub fn new(secret: &[u8], leeway: Duration) -> Result<Self, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway.as_secs();
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            key: DecodingKey::from_secret(secret).map_err(|e| AuthError::Invalid(e.to_string()))?,
            validation,
        })
    }

    /// Checks signature, algorithm and expiry; the user's existence is
    /// checked by the caller against the store.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let user = UserId::try_from(data.claims.sub.as_str())
            .map_err(|_| AuthError::Invalid("sub is not a user id".into()))?;
        Ok(Identity {
            user,
            expires_at: data.claims.exp,
        })
    }
}

/// Signs an HS256 token for `user`, valid for `ttl`.
pub fn mint(secret: &[u8], user: &UserId, ttl: Duration) -> Result<String, AuthError> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: user.to_string(),
        exp: now.saturating_add(ttl.as_secs()),
        iat: Some(now),
    };
    let key = EncodingKey::from_secret(secret).map_err(|e| AuthError::Invalid(e.to_string()))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| AuthError::Invalid(e.to_string()))
}

/// Where a token came from; the subprotocol carrier must be answered with
/// `natter.v1` in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub token: String,
    pub via_subprotocol: bool,
}

/// Finds the token: `?token=`, `Authorization: Bearer`, or the
/// `bearer.<JWT>` subprotocol entry, in that order.
pub fn presented_token(uri: &Uri, headers: &HeaderMap) -> Option<Presented> {
    let from_query = uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, v)| *k == "token" && !v.is_empty())
            .map(|(_, v)| percent_decode(v))
    });
    let from_header = || {
        headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(|t| t.trim().to_string())
    };
    if let Some(token) = from_query.or_else(from_header).filter(|t| !t.is_empty()) {
        return Some(Presented {
            token,
            via_subprotocol: false,
        });
    }
    offered_subprotocols(headers)
        .find_map(|p| {
            p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX)
                .map(str::to_string)
        })
        .filter(|t| !t.is_empty())
        .map(|token| Presented {
            token,
            via_subprotocol: true,
        })
}

/// Whether the client offered `natter.v1`.
pub fn offers_natter_subprotocol(headers: &HeaderMap) -> bool {
    offered_subprotocols(headers).any(|p| p == SUBPROTOCOL)
}

fn offered_subprotocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Decodes `%XX` and `+` in a query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_carriers() {
        let uri: Uri = "/ws?a=1&token=abc%2Edef".parse().expect("uri");
        let t = presented_token(&uri, &HeaderMap::new()).expect("query token");
        assert_eq!(t.token, "abc.def");
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer xyz".parse().expect("hv"));
        assert_eq!(
            presented_token(&"/".parse().expect("uri"), &h).map(|p| p.token),
            Some("xyz".into())
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "natter.v1, bearer.tok".parse().expect("hv"),
        );
        let t = presented_token(&"/".parse().expect("uri"), &h).expect("subprotocol");
        assert!(t.via_subprotocol && t.token == "tok");
        assert!(offers_natter_subprotocol(&h));
        assert_eq!(
            presented_token(&"/?token=".parse().expect("uri"), &HeaderMap::new()),
            None
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%é"), "%é");
    }

    #[test]
    fn pinned_algorithm() {
        let v = Verifier::new(b"secret", Duration::ZERO).expect("key");
        let alice = UserId::try_from("alice").expect("id");
        let good = mint(b"secret", &alice, Duration::from_secs(60)).expect("mint");
        assert_eq!(v.verify(&good).map(|i| i.user), Ok(alice.clone()));
        let other = mint(b"other", &alice, Duration::from_secs(60)).expect("mint");
        assert!(v.verify(&other).is_err());
        let claims = Claims {
            sub: "alice".into(),
            exp: u64::MAX / 2,
            iat: None,
        };
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(b"secret").expect("key"),
        )
        .expect("encode");
        assert!(v.verify(&hs384).is_err());
    }
}
