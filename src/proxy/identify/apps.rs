//! The OAuth apps whose client credentials the identity layer holds (`[[apps]]`), and how an
//! OAuth token's app is found among them: HubSpot's dated introspection asked with each
//! app's credentials in turn, the app that matched last asked first.
//!
//! Dated introspection only answers for the app whose credentials ask, so with several apps
//! a token may take one question per app. The owner it finds is cached like any other (until
//! the token expires), and most tokens belong to the app that matched last, so the common
//! case is one question.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use governor::DefaultDirectRateLimiter;

use super::turns::paced;
use crate::config::{AppConfig, UpstreamTarget};
use crate::hubspot::dated_introspect::{self, ClientCredentials, DatedAnswer};
use crate::hubspot::Owner;
use crate::pace::clock::wall_now;
use crate::proxy::upstream::UpstreamClient;

/// The apps, read once at start-up (their secrets from the environment).
#[derive(Debug, Default)]
pub(super) struct Apps {
    apps: Vec<App>,
    /// Index of the app whose introspection matched last.
    last_match: AtomicUsize,
}

struct App {
    app_id: u64,
    client_id: String,
    client_secret: String,
}

impl std::fmt::Debug for App {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("app_id", &self.app_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// What asking every app concluded.
pub(super) enum Found {
    Owner {
        owner: Owner,
        ttl: Duration,
    },
    /// Every app answered, none knows the token.
    NoApp,
}

impl Apps {
    /// Reads each app's secret; an app whose secret cannot be read stops the start, naming
    /// the entry and the variable.
    pub(super) fn new(configs: &[AppConfig]) -> anyhow::Result<Apps> {
        let mut apps = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let client_secret = c
                .client_secret()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("[[apps]] entry {i} (app {}): client secret", c.app_id))?;
            apps.push(App {
                app_id: c.app_id,
                client_id: c.client_id.clone(),
                client_secret,
            });
        }
        Ok(Apps {
            apps,
            last_match: AtomicUsize::new(0),
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// Asks each app in turn, the last match first; questions after the first wait for
    /// `pace`. `Err` when no app knew the token and at least one could not be asked.
    pub(super) async fn find_owner(
        &self,
        token: &str,
        client: &UpstreamClient,
        target: &UpstreamTarget,
        pace: &DefaultDirectRateLimiter,
    ) -> Result<Found, String> {
        let first = self.last_match.load(Ordering::Relaxed) % self.apps.len().max(1);
        let mut failure = None;
        for step in 0..self.apps.len() {
            if step > 0 {
                paced(pace).await;
            }
            let index = (first + step) % self.apps.len();
            let app = &self.apps[index];
            match self.ask(app, token, client, target).await {
                Ok(DatedAnswer::Active { owner, ttl }) => {
                    self.last_match.store(index, Ordering::Relaxed);
                    return Ok(Found::Owner { owner, ttl });
                }
                Ok(DatedAnswer::Inactive) => {}
                Ok(DatedAnswer::ClientRefused(status)) => {
                    tracing::warn!(
                        app_id = app.app_id,
                        client_id = %app.client_id,
                        %status,
                        "HubSpot refused this [[apps]] entry's client credentials for introspection; check its client_id and secret"
                    );
                }
                Err(why) => failure = Some(format!("app {}: {why}", app.app_id)),
            }
        }
        match failure {
            Some(why) => Err(why),
            None => Ok(Found::NoApp),
        }
    }

    async fn ask(
        &self,
        app: &App,
        token: &str,
        client: &UpstreamClient,
        target: &UpstreamTarget,
    ) -> Result<DatedAnswer, String> {
        let credentials = ClientCredentials {
            client_id: &app.client_id,
            client_secret: &app.client_secret,
        };
        let request = dated_introspect::request(token, &credentials, target)?;
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        let now_unix_ms = wall_now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        dated_introspect::read_answer(response, now_unix_ms).await
    }
}
