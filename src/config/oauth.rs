//! `[[apps]]`: the OAuth apps hubgate knows the client credentials of, which HubSpot's dated
//! token endpoints (introspection, refresh) require, and how to read each app's secret.

use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// One OAuth app, from `[[apps]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AppConfig {
    /// HubSpot's id of the app (the `app_id` introspection answers).
    pub app_id: u64,
    /// The app's OAuth client id.
    pub client_id: String,
    /// Name of the environment variable holding the app's client secret.
    #[serde(default)]
    pub client_secret_env: String,
    /// The client secret itself; accepted, but `check-config` warns: prefer
    /// `client_secret_env` so the file holds no secret.
    #[serde(default)]
    pub client_secret: String,
    /// The redirect URI registered for the app, where HubSpot sends the browser back.
    #[serde(default)]
    pub redirect_uri: String,
    /// Scopes an install must grant.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Scopes an install may grant.
    #[serde(default)]
    pub optional_scopes: Vec<String>,
}

impl AppConfig {
    /// The app's client secret: the literal one, else the named environment variable's value.
    /// `Err` says what is missing, naming the variable, never a value.
    pub fn client_secret(&self) -> Result<String, String> {
        if !self.client_secret.is_empty() {
            return Ok(self.client_secret.clone());
        }
        match std::env::var(&self.client_secret_env) {
            Ok(secret) if !secret.is_empty() => Ok(secret),
            Ok(_) => Err(format!(
                "environment variable {} is empty",
                self.client_secret_env
            )),
            Err(_) => Err(format!(
                "environment variable {} is not set",
                self.client_secret_env
            )),
        }
    }
}

/// Checks `[[apps]]`: each entry has an app id and a client id, its secret given exactly one
/// way, and no app id or client id is listed twice. Keys look like `apps.0.client_id`.
pub(crate) fn check_apps(apps: &[AppConfig], problems: &mut Problems) {
    for (i, app) in apps.iter().enumerate() {
        if app.app_id == 0 {
            problems.add(
                format!("apps.{i}.app_id"),
                "give the app's id (HubSpot's developer account shows it)",
            );
        }
        if app.client_id.trim().is_empty() {
            problems.add(format!("apps.{i}.client_id"), "give the app's client id");
        }
        match (
            app.client_secret_env.is_empty(),
            app.client_secret.is_empty(),
        ) {
            (true, true) => problems.add(
                format!("apps.{i}.client_secret_env"),
                "give the name of the environment variable holding the app's client secret",
            ),
            (false, false) => problems.add(
                format!("apps.{i}.client_secret"),
                "give either client_secret_env or client_secret, not both",
            ),
            _ => {}
        }
        for (j, other) in apps[..i].iter().enumerate() {
            if other.app_id == app.app_id && app.app_id != 0 {
                problems.add(
                    format!("apps.{i}.app_id"),
                    format!("app {} is already apps[{j}]", app.app_id),
                );
            }
            if other.client_id == app.client_id && !app.client_id.trim().is_empty() {
                problems.add(
                    format!("apps.{i}.client_id"),
                    format!("this client id is already apps[{j}]'s"),
                );
            }
        }
    }
}

/// What is allowed but unwise in `[[apps]]`: a secret written into the file.
pub(crate) fn app_warnings(apps: &[AppConfig], problems: &mut Problems) {
    for (i, app) in apps.iter().enumerate() {
        if !app.client_secret.is_empty() {
            problems.add(
                format!("apps.{i}.client_secret"),
                "the client secret is written in the file; put it in an environment variable \
                 and name that in client_secret_env instead",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(app_id: u64, client_id: &str, env: &str, literal: &str) -> AppConfig {
        AppConfig {
            app_id,
            client_id: client_id.into(),
            client_secret_env: env.into(),
            client_secret: literal.into(),
            ..AppConfig::default()
        }
    }

    fn keys(apps: &[AppConfig], check: fn(&[AppConfig], &mut Problems)) -> Vec<String> {
        let mut problems = Problems::default();
        check(apps, &mut problems);
        problems.into_vec().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn apps_are_checked_and_literal_secrets_warned_about() {
        let good = [app(1, "a", "SECRET_A", ""), app(2, "b", "", "literal")];
        assert!(keys(&good, check_apps).is_empty());
        assert_eq!(keys(&good, app_warnings), ["apps.1.client_secret"]);
        let bad = [
            app(0, " ", "", ""),
            app(3, "c", "E", "x"),
            app(3, "c", "E", ""),
        ];
        assert_eq!(
            keys(&bad, check_apps),
            [
                "apps.0.app_id",
                "apps.0.client_id",
                "apps.0.client_secret_env",
                "apps.1.client_secret",
                "apps.2.app_id",
                "apps.2.client_id",
            ]
        );
    }

    #[test]
    fn the_secret_comes_from_the_file_or_the_named_variable() {
        assert_eq!(app(1, "a", "", "s").client_secret().as_deref(), Ok("s"));
        let missing = app(1, "a", "HUBGATE_TEST_SECRET_THAT_IS_NEVER_SET", "");
        let why = missing.client_secret().unwrap_err();
        assert!(
            why.contains("HUBGATE_TEST_SECRET_THAT_IS_NEVER_SET"),
            "{why}"
        );
    }
}
