//! Who may call and what a call may cost: bearer tokens and roles (`tokens`), the guard
//! in front of every RPC (`guard`), rate and size limits (`limits`), TLS (`tls`), and the
//! start-up rule that keeps an unprotected server off the network.

pub mod guard;
pub mod limits;
pub mod tls;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;

use crate::config::Config;
use guard::GuardState;
use limits::RateLimiter;
use tls::{TlsFiles, TlsState};
use tokens::TokenSet;

/// The server's security settings in force: the guard's state and TLS, both reloadable.
#[derive(Debug, Clone)]
pub struct Security {
    /// Tokens, limits and the in-flight cap.
    pub guard: Arc<GuardState>,
    /// TLS; `None`: plaintext HTTP/2.
    pub tls: Option<Arc<TlsState>>,
    tokens_file: Option<PathBuf>,
    allow_empty_tokens: bool,
}

impl Security {
    /// Reads the tokens file and TLS files named in `config` and applies the exposure
    /// rule for `listen` (see [`exposure`]); any error stops the start.
    pub fn from_config(config: &Config, listen: SocketAddr) -> anyhow::Result<Security> {
        let tls_files = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.tls_client_ca.clone(),
            }),
            (None, None) if config.tls_client_ca.is_some() => {
                anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key")
            }
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let tokens = config
            .auth_tokens_file
            .as_deref()
            .map(|path| TokenSet::load(path, config.allow_empty_tokens))
            .transpose()?;
        match exposure(
            listen,
            tokens.is_some(),
            tls_files.is_some(),
            config.insecure,
        ) {
            Exposure::Refused(message) => anyhow::bail!(message),
            Exposure::Insecure(warning) => {
                tracing::warn!("{warning}");
                tokio::spawn(async move {
                    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
                    hourly.tick().await;
                    loop {
                        hourly.tick().await;
                        tracing::warn!("{warning}");
                    }
                });
            }
            Exposure::Protected => {}
        }
        if let Some(set) = &tokens {
            tracing::info!(tokens = set.entries().len(), "bearer tokens required");
        }
        let tls = tls_files.map(TlsState::new).transpose()?.map(Arc::new);
        let rate = std::num::NonZeroU32::new(config.rate_limit)
            .map(|rate| RateLimiter::new(rate, config.rate_limit_burst));
        Ok(Security {
            guard: Arc::new(GuardState {
                tokens: tokens.map(|set| RwLock::new(Arc::new(set))),
                rate,
                in_flight: Arc::new(Semaphore::new(config.max_in_flight as usize)),
                max_in_flight: config.max_in_flight as usize,
                max_request_bytes: config.max_request_bytes as usize,
                per_connection: config.in_flight_per_connection(),
                per_caller: config.in_flight_per_caller(),
                body_timeout: config.request_body_timeout(),
                held: std::sync::Mutex::default(),
            }),
            tls,
            tokens_file: config.auth_tokens_file.clone(),
            allow_empty_tokens: config.allow_empty_tokens,
        })
    }

    /// Reads the tokens file and TLS files again (on SIGHUP). What fails to load is
    /// logged and the settings in use stay; connections and calls are not touched.
    pub fn reload(&self) {
        if let Some(path) = &self.tokens_file {
            match TokenSet::load(path, self.allow_empty_tokens) {
                Ok(set) => {
                    tracing::info!(tokens = set.entries().len(), "tokens file reloaded");
                    self.guard.replace_tokens(set);
                }
                Err(e) => tracing::error!("{e:#}; the tokens in use stay"),
            }
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificates reloaded"),
                Err(e) => tracing::error!("{e:#}; the certificates in use stay"),
            }
        }
    }
}

/// Whether a server may listen where it was told to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback only, or tokens and TLS both on.
    Protected,
    /// Reachable from the network without them, as `--insecure` asked: this warning is
    /// logged at start and every hour.
    Insecure(String),
    /// Refused: the message says why and what to do.
    Refused(String),
}

/// The start-up rule: a server reachable from other machines needs bearer tokens and
/// TLS, unless `--insecure` accepts the risk. Loopback needs neither.
pub fn exposure(listen: SocketAddr, tokens: bool, tls: bool, insecure: bool) -> Exposure {
    if listen.ip().is_loopback() || (tokens && tls) {
        return Exposure::Protected;
    }
    let missing = match (tokens, tls) {
        (false, false) => {
            "without bearer tokens or TLS: anyone who reaches the port can read, \
                           write and purge every customer in plaintext"
        }
        (false, true) => {
            "without bearer tokens: anyone who reaches the port can read, write and \
                          purge every customer"
        }
        _ => "without TLS: tokens and personal data cross the network in plaintext",
    };
    if insecure {
        Exposure::Insecure(format!(
            "INSECURE: serving on {listen} {missing} (--insecure)"
        ))
    } else {
        Exposure::Refused(format!(
            "refusing to serve on {listen} {missing}. Give --auth-tokens-file and \
             --tls-cert/--tls-key, listen on a loopback address (127.0.0.1, [::1]), or pass \
             --insecure to accept the risk"
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_or_tokens_with_tls_serve_without_insecure() {
        let lo: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let lo6: SocketAddr = "[::1]:50051".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let lan: SocketAddr = "10.0.0.5:50051".parse().unwrap();
        for addr in [lo, lo6] {
            assert_eq!(exposure(addr, false, false, false), Exposure::Protected);
        }
        for addr in [any, lan] {
            assert_eq!(exposure(addr, true, true, false), Exposure::Protected);
            for (tokens, tls) in [(false, false), (true, false), (false, true)] {
                let Exposure::Refused(message) = exposure(addr, tokens, tls, false) else {
                    panic!("{addr} {tokens} {tls} served");
                };
                assert!(message.contains("--insecure"), "{message}");
                assert!(message.contains(&addr.to_string()), "{message}");
                assert!(matches!(
                    exposure(addr, tokens, tls, true),
                    Exposure::Insecure(w) if w.starts_with("INSECURE")
                ));
            }
        }
    }
}
