//! Who is connecting and what they may do: token authentication, the websocket origin check,
//! and the custom-script policy. Tokens are compared by SHA-256 digest and never logged.

use crate::config::{Config, Role};

/// Prefix of the websocket subprotocol that carries a token (`token.<TOKEN>`).
pub const TOKEN_PROTOCOL_PREFIX: &str = "token.";
/// The subprotocol the server answers with when a client offers it.
pub const PROTOCOL_NAME: &str = "heat-actix.v1";

/// Why a connection was refused before it could do anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Tokens are configured and the client presented none.
    #[error("this server requires a token: add ?token=… to the page address")]
    Missing,
    /// The token is not one of ours.
    #[error("the token is not valid")]
    Invalid,
}

/// Why an upgrade was refused for its Origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("origin {origin} may not open a websocket here (allow it in policy.allowed_origins)")]
pub struct OriginError {
    pub origin: String,
}

/// The holder of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name, or `anonymous` when the server asks for no token.
    pub name: String,
    pub role: Role,
}

/// Finds the caller's identity from a `token` query parameter or a `token.<TOKEN>` subprotocol.
pub fn authenticate(
    config: &Config,
    query_token: Option<&str>,
    protocols: &[&str],
) -> Result<Identity, AuthError> {
    if config.auth.tokens.is_empty() {
        // No tokens: the config validation guarantees a loopback bind. Everyone may do what
        // the policy allows.
        return Ok(Identity {
            name: "anonymous".into(),
            role: Role::Operator,
        });
    }
    let token = query_token.or_else(|| {
        protocols
            .iter()
            .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX))
    });
    let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
    let (name, role) = config.role_of(token).ok_or(AuthError::Invalid)?;
    Ok(Identity {
        name: name.to_owned(),
        role,
    })
}

impl Identity {
    /// Whether this identity may run a custom script here; the reason when not.
    pub fn may_run_custom_scripts(&self, config: &Config) -> Result<(), &'static str> {
        if !config.policy.custom_scripts {
            return Err("custom scripts are disabled on this server (policy.custom_scripts = false); run a preset");
        }
        if self.role < Role::Operator {
            return Err("custom scripts need an operator token; this token may run presets only");
        }
        Ok(())
    }
}

/// Accepts a browser's upgrade when its Origin is the page's own host or is allowed by config.
/// Clients that send no Origin (command-line tools, not browsers) are not cross-site pages and
/// pass; they still need a token when tokens are configured.
pub fn check_origin(
    config: &Config,
    origin: Option<&str>,
    host: Option<&str>,
) -> Result<(), OriginError> {
    let Some(origin) = origin else { return Ok(()) };
    let refused = || OriginError {
        origin: origin.to_owned(),
    };
    if config
        .policy
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(refused)?;
    match host {
        Some(host) if origin_host.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{hash_token, TokenConfig};

    fn config_with_tokens() -> Config {
        let mut config = Config::default();
        config.auth.tokens = vec![
            TokenConfig {
                name: "vic".into(),
                role: Role::Viewer,
                sha256: hash_token("view"),
            },
            TokenConfig {
                name: "ops".into(),
                role: Role::Operator,
                sha256: hash_token("operate"),
            },
        ];
        config.policy.custom_scripts = true;
        config
    }

    #[test]
    fn tokens_come_from_the_query_or_a_subprotocol() {
        let config = config_with_tokens();
        assert_eq!(authenticate(&config, None, &[]), Err(AuthError::Missing));
        assert_eq!(
            authenticate(&config, Some("nope"), &[]),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            authenticate(&config, Some("view"), &[]).unwrap().role,
            Role::Viewer
        );
        let ops = authenticate(&config, None, &["heat-actix.v1", "token.operate"]).unwrap();
        assert_eq!((ops.name.as_str(), ops.role), ("ops", Role::Operator));
    }

    #[test]
    fn viewers_run_presets_only_and_the_policy_switch_wins() {
        let mut config = config_with_tokens();
        let viewer = authenticate(&config, Some("view"), &[]).unwrap();
        let operator = authenticate(&config, Some("operate"), &[]).unwrap();
        assert!(viewer.may_run_custom_scripts(&config).is_err());
        assert!(operator.may_run_custom_scripts(&config).is_ok());
        config.policy.custom_scripts = false;
        assert!(operator
            .may_run_custom_scripts(&config)
            .unwrap_err()
            .contains("disabled"));
    }

    #[test]
    fn only_the_own_origin_and_allowed_ones_pass() {
        let mut config = Config::default();
        assert!(check_origin(
            &config,
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080")
        )
        .is_ok());
        assert!(
            check_origin(&config, Some("http://evil.example"), Some("127.0.0.1:8080")).is_err()
        );
        assert!(check_origin(&config, Some("null"), Some("127.0.0.1:8080")).is_err());
        assert!(check_origin(&config, None, Some("127.0.0.1:8080")).is_ok());
        config.policy.allowed_origins = vec!["https://grafana.example".into()];
        assert!(check_origin(
            &config,
            Some("https://grafana.example"),
            Some("127.0.0.1:8080")
        )
        .is_ok());
    }
}
