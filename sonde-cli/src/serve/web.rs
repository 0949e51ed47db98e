//! The endpoint's security, the `[web]` section of the configuration (in the
//! spirit of Prometheus' web configuration file): TLS from a certificate and
//! key in PEM files, and HTTP basic auth checked against bcrypt hashes.
//!
//! ```toml
//! [web.tls]
//! cert_file = "/etc/sonde/tls.crt"     # the chain, leaf first (PEM)
//! key_file = "/etc/sonde/tls.key"      # PKCS#8, PKCS#1 or SEC1 (PEM)
//!
//! [web.basic_auth_users]
//! prometheus = "$2y$10$..."            # bcrypt: `sonde serve --hash-password`
//! ```
//!
//! Both take effect at start. A request without valid credentials gets 401
//! and learns nothing else; a successful check is remembered (a keyed hash of
//! the credentials, at most [`REMEMBERED`]) so a scrape every few seconds does
//! not pay bcrypt's cost each time.

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

/// Credentials remembered after a successful check.
pub const REMEMBERED: usize = 64;

/// `[web]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Serve `/metrics` over TLS.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// User name to bcrypt hash; when any, every request needs one of them.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

/// `[web.tls]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
}

impl Web {
    /// Checks what can be checked without reading files: each hash is a
    /// bcrypt hash, each user name is non-empty and has no `:`.
    pub fn check(&self) -> Result<(), String> {
        for (user, hash) in &self.basic_auth_users {
            if user.is_empty() || user.contains(':') {
                return Err(format!(
                    "[web.basic_auth_users]: {user:?} is not a user name (non-empty, no `:`)"
                ));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!(
                    "[web.basic_auth_users] {user}: not a bcrypt hash (make one with `sonde serve --hash-password`)"
                ));
            }
        }
        Ok(())
    }

    /// The TLS server configuration, certificate and key read now.
    pub fn tls_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let Some(tls) = &self.tls else { return Ok(None) };
        let fail = |what: &str, path: &Path, e: String| format!("[web.tls] {what} {}: {e}", path.display());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
            .map_err(|e| fail("cert_file", &tls.cert_file, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| fail("cert_file", &tls.cert_file, e.to_string()))?;
        if certs.is_empty() {
            return Err(fail("cert_file", &tls.cert_file, "no CERTIFICATE in it".into()));
        }
        let key =
            PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| fail("key_file", &tls.key_file, e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("[web.tls]: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("[web.tls]: the certificate and key do not go together: {e}"))?;
        Ok(Some(Arc::new(config)))
    }

    /// The basic-auth check, `None` when no user is configured.
    pub fn users(&self) -> Option<Users> {
        (!self.basic_auth_users.is_empty()).then(|| Users {
            hashes: self.basic_auth_users.clone(),
            keys: std::collections::hash_map::RandomState::new(),
            remembered: Arc::new(Mutex::new(HashSet::new())),
        })
    }
}

/// Users allowed in, and the credentials that passed.
#[derive(Clone)]
pub struct Users {
    hashes: BTreeMap<String, String>,
    keys: std::collections::hash_map::RandomState,
    remembered: Arc<Mutex<HashSet<u64>>>,
}

impl Users {
    /// Whether an `Authorization` header value lets the request in (blocking:
    /// bcrypt takes tens of milliseconds the first time).
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        use base64::Engine;
        let Some(encoded) = authorization.and_then(|a| a.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let Some(hash) = std::str::from_utf8(user).ok().and_then(|u| self.hashes.get(u)) else {
            return false;
        };
        let seen = self.keys.hash_one((user, password, hash));
        let mut remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if remembered.contains(&seen) {
            return true;
        }
        drop(remembered);
        if !bcrypt::verify(password, hash).unwrap_or(false) {
            return false;
        }
        remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if remembered.len() >= REMEMBERED {
            remembered.clear();
        }
        remembered.insert(seen);
        true
    }
}

/// `sonde serve --hash-password`: a bcrypt hash of the password on stdin's
/// first line, for `[web.basic_auth_users]`.
pub fn hash_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err("no password on stdin".into());
    }
    bcrypt::hash(password, bcrypt::DEFAULT_COST).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> String {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn only_a_configured_user_with_the_right_password_gets_in() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let web = Web {
            tls: None,
            basic_auth_users: [("prom".to_string(), hash)].into(),
        };
        web.check().expect("valid");
        let users = web.users().expect("users");
        for _ in 0..2 {
            // The second time from what it remembered.
            assert!(users.allows(Some(&header("prom", "s3cret"))));
        }
        for bad in [
            None,
            Some(header("prom", "wrong")),
            Some(header("other", "s3cret")),
            Some("Bearer x".to_string()),
            Some("Basic !!!".to_string()),
            Some(header("prom", "s3cret").replace("Basic ", "basic ")),
        ] {
            assert!(!users.allows(bad.as_deref()), "{bad:?}");
        }
        assert!(Web::default().users().is_none(), "no users: no check");
    }

    #[test]
    fn mistakes_are_named() {
        let web = |user: &str, hash: &str| Web {
            tls: None,
            basic_auth_users: [(user.to_string(), hash.to_string())].into(),
        };
        assert!(web("prom", "plain").check().unwrap_err().contains("--hash-password"));
        assert!(web("a:b", &bcrypt::hash("x", 4).expect("hash"))
            .check()
            .unwrap_err()
            .contains("user name"));
        let missing = Web {
            tls: Some(Tls {
                cert_file: "/no/such.crt".into(),
                key_file: "/no/such.key".into(),
            }),
            basic_auth_users: BTreeMap::new(),
        };
        assert!(missing.tls_config().unwrap_err().contains("/no/such.crt"));
    }
}
