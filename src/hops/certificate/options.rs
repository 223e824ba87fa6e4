//! The certificate settings a TLS login target (mssql, postgres) takes, from its URL
//! (`revocation=off`, `cert_warn_days=N`) or config table (`revocation = false`,
//! `cert_warn_days = N`).

use crate::check_table::RawCheck;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertOptions {
    /// Run hop `revocation` (default on).
    pub revocation: bool,
    /// Days left under which the certificate warns; `None`: the run's `--cert-warn-days`.
    pub warn_days: Option<u32>,
}

impl Default for CertOptions {
    fn default() -> Self {
        CertOptions {
            revocation: true,
            warn_days: None,
        }
    }
}

/// The URL keys this module reads, for the kinds' "known:" lists.
pub const URL_KEYS: &str = "revocation, cert_warn_days";

impl CertOptions {
    /// Takes `key=value` from a URL if it is one of these settings: `None` when the key is
    /// another's, else whether the value was good.
    pub fn take_url_pair(&mut self, key: &str, value: &str) -> Option<Result<(), String>> {
        match key {
            "revocation" => Some(match value.to_ascii_lowercase().as_str() {
                "off" | "false" | "no" | "0" => {
                    self.revocation = false;
                    Ok(())
                }
                "on" | "true" | "yes" | "1" => {
                    self.revocation = true;
                    Ok(())
                }
                other => Err(format!("revocation takes on or off, not `{other}`")),
            }),
            "cert_warn_days" => Some(match value.parse::<u32>() {
                Ok(n) => {
                    self.warn_days = Some(n);
                    Ok(())
                }
                Err(_) => Err(format!(
                    "cert_warn_days takes a whole number of days, not `{value}`"
                )),
            }),
            _ => None,
        }
    }

    pub fn from_config(raw: &RawCheck) -> CertOptions {
        CertOptions {
            revocation: raw.revocation.unwrap_or(true),
            warn_days: raw.cert_warn_days,
        }
    }

    /// The URL query pairs that are not the default, for a target's canonical display.
    pub fn query_pairs(&self) -> Vec<String> {
        let mut q = Vec::new();
        if !self.revocation {
            q.push("revocation=off".to_string());
        }
        if let Some(n) = self.warn_days {
            q.push(format!("cert_warn_days={n}"));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_pairs() {
        let mut o = CertOptions::default();
        assert_eq!(o.take_url_pair("tx", "local"), None);
        assert_eq!(o.take_url_pair("revocation", "off"), Some(Ok(())));
        assert_eq!(o.take_url_pair("cert_warn_days", "14"), Some(Ok(())));
        assert_eq!(
            o,
            CertOptions {
                revocation: false,
                warn_days: Some(14)
            }
        );
        assert_eq!(o.query_pairs(), ["revocation=off", "cert_warn_days=14"]);
        assert!(
            matches!(o.take_url_pair("cert_warn_days", "-3"), Some(Err(m)) if m.contains("-3"))
        );
        assert!(matches!(
            o.take_url_pair("revocation", "maybe"),
            Some(Err(_))
        ));
    }
}
