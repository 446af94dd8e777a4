//! hubgate's own calls to HubSpot's dated OAuth token endpoints (`/oauth/2026-03/token`
//! and `/token/revoke`): form-encoded requests, and what their answers say.
//!
//! They go through the pacing layer like a caller's token call, so one budget
//! (`budgets.token_limit`) covers every call to the token endpoint, hubgate's included.

use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use serde::Deserialize;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt as _;

use crate::proxy::body::{self, Body, BoxError};

/// The paced path (pacing, then the upstream) as the broker holds it: shared by every
/// refresh task, so `Sync`.
pub(crate) type PacedService = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// The dated token endpoint (the v1 one goes away on 2027-02-16).
pub(crate) const TOKEN_PATH: &str = "/oauth/2026-03/token";
pub(crate) const REVOKE_PATH: &str = "/oauth/2026-03/token/revoke";

/// Token answers are a few hundred bytes; anything much larger is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The caller name hubgate's own token calls are paced under.
const BROKER_CALLER: &str = "hubgate-broker";

/// An app's client credentials, as the token endpoint wants them.
#[derive(Clone)]
pub(crate) struct ClientCredentials {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// A successful token answer.
pub(crate) struct Grant {
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
    pub(crate) expires_in: Duration,
    pub(crate) hub_id: Option<u64>,
    pub(crate) scopes: Vec<String>,
}

/// Why the token endpoint gave no grant.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum TokenError {
    /// The refresh token (or code) is dead: `invalid_grant`, `BAD_REFRESH_TOKEN`,
    /// `BAD_AUTH_CODE`. Only a new install brings it back.
    #[error("HubSpot refused the grant ({status}): {description}")]
    InvalidGrant { status: String, description: String },
    /// Any other 4xx: the app's credentials or redirect URI are wrong.
    #[error("HubSpot refused the token request ({status}): {description}; check the app's client_id, client secret and redirect_uri in [[apps]]")]
    Refused { status: String, description: String },
    /// 429, 5xx or no answer: passes; try again later (after `retry_after` when given).
    #[error("the token endpoint is unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
}

type SendFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// Sends token-endpoint requests through the paced request path.
#[derive(Clone)]
pub(crate) struct TokenEndpoint {
    paced: PacedService,
    timeout: Duration,
}

impl std::fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl TokenEndpoint {
    pub(crate) fn new(paced: PacedService, timeout: Duration) -> TokenEndpoint {
        TokenEndpoint { paced, timeout }
    }

    /// How long one token call may take, queueing included: a refresh lock must outlive it.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) async fn refresh(
        &self,
        app: &ClientCredentials,
        refresh_token: &str,
    ) -> Result<Grant, TokenError> {
        self.grant(&[
            ("grant_type", "refresh_token"),
            ("client_id", &app.client_id),
            ("client_secret", &app.client_secret),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    pub(crate) async fn exchange_code(
        &self,
        app: &ClientCredentials,
        code: &str,
        redirect_uri: &str,
    ) -> Result<Grant, TokenError> {
        self.grant(&[
            ("grant_type", "authorization_code"),
            ("client_id", &app.client_id),
            ("client_secret", &app.client_secret),
            ("redirect_uri", redirect_uri),
            ("code", code),
        ])
        .await
    }

    /// Revokes a refresh token; an already dead token counts as revoked.
    pub(crate) async fn revoke(
        &self,
        app: &ClientCredentials,
        refresh_token: &str,
    ) -> Result<(), TokenError> {
        let fields = [
            ("client_id", app.client_id.as_str()),
            ("client_secret", app.client_secret.as_str()),
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
        ];
        let (status, answer) = self.post(REVOKE_PATH, &fields).await?;
        if status.is_success() || status == StatusCode::BAD_REQUEST {
            return Ok(());
        }
        Err(TokenError::Unavailable {
            reason: format!("revoke answered {status}: {}", summary(&answer)),
            retry_after: None,
        })
    }

    /// Boxed in a plain function: naming the service's future inside an async fn trips
    /// rustc's higher-ranked `Send` check (rust-lang/rust#64552).
    fn send(&self, request: Request<Body>) -> SendFuture {
        Box::pin(self.paced.clone().oneshot(request))
    }

    async fn grant(&self, fields: &[(&str, &str)]) -> Result<Grant, TokenError> {
        let (status, answer) = self.post(TOKEN_PATH, fields).await?;
        if !status.is_success() {
            let error: ErrorAnswer = serde_json::from_slice(&answer).unwrap_or_default();
            let code = error
                .status
                .clone()
                .or(error.error.clone())
                .unwrap_or_else(|| status.to_string());
            let description = error
                .error_description
                .or(error.message)
                .unwrap_or_else(|| "no description".into());
            let dead = error.error.as_deref() == Some("invalid_grant")
                || matches!(
                    error.status.as_deref(),
                    Some("BAD_REFRESH_TOKEN" | "BAD_AUTH_CODE")
                );
            return Err(if dead {
                TokenError::InvalidGrant {
                    status: code,
                    description,
                }
            } else {
                TokenError::Refused {
                    status: code,
                    description,
                }
            });
        }
        let grant: GrantAnswer =
            serde_json::from_slice(&answer).map_err(|e| TokenError::Unavailable {
                reason: format!(
                    "the token answer is not token JSON ({:?} at {}:{})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
                retry_after: None,
            })?;
        Ok(Grant {
            access_token: grant.access_token,
            refresh_token: grant.refresh_token,
            expires_in: Duration::from_secs(grant.expires_in.clamp(1, 24 * 3600)),
            hub_id: grant.hub_id,
            scopes: grant.scopes.unwrap_or_default(),
        })
    }

    /// POSTs `fields` form-encoded to `path`; 429 and 5xx (after the pacing layer's own
    /// retries) and transport failures come back as `Unavailable`.
    async fn post(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Result<(StatusCode, bytes::Bytes), TokenError> {
        let unavailable = |reason: String| TokenError::Unavailable {
            reason,
            retry_after: None,
        };
        let form = form_encode(fields);
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header("x-hubgate-caller", BROKER_CALLER)
            .header(
                "x-hubgate-deadline-ms",
                self.timeout.as_millis().to_string(),
            )
            .body(body::full(form))
            .map_err(|e| unavailable(format!("building the request: {e}")))?;
        let sent = tokio::time::timeout(self.timeout, self.send(request)).await;
        let response = match sent {
            Err(_) => {
                return Err(unavailable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
            Ok(Err(refused)) => return Err(unavailable(refused.to_string())),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let answer = body::read_at_most(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .ok_or_else(|| unavailable("the answer failed or was too large to be one".into()))?;
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(TokenError::Unavailable {
                reason: format!("{status}: {}", summary(&answer)),
                retry_after,
            });
        }
        Ok((status, answer))
    }
}

/// `application/x-www-form-urlencoded`: everything but unreserved characters escaped.
pub(crate) fn form_encode(fields: &[(&str, &str)]) -> String {
    let escape = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", escape(name), escape(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The start of an error answer, for logs: never a whole body, which may echo a token.
fn summary(answer: &[u8]) -> String {
    let error: ErrorAnswer = serde_json::from_slice(answer).unwrap_or_default();
    error
        .message
        .or(error.error_description)
        .unwrap_or_else(|| "no JSON message".into())
        .chars()
        .take(200)
        .collect()
}

#[derive(Deserialize)]
struct GrantAnswer {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
    hub_id: Option<u64>,
    scopes: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    error: Option<String>,
    error_description: Option<String>,
    status: Option<String>,
    message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_escape_everything_but_unreserved_characters() {
        assert_eq!(
            form_encode(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "a b&c=d/é~")
            ]),
            "grant_type=refresh_token&refresh_token=a%20b%26c%3Dd%2F%C3%A9~"
        );
    }
}
