//! What an `epm` check asks: the host, the mapper port and the interface, from an `epm://` URL or a
//! config `[[check]]`. Parsing lives apart from the conversation so that the target layer (URLs,
//! config files) can build an [`EpmTarget`] without anything that touches the network.

use crate::dcerpc::{SyntaxId, Uuid, IXNREMOTE};

/// The endpoint mapper's well-known TCP port.
pub const EPM_PORT: u16 = 135;

/// The interface a check asks about: a UUID and optionally a version (any version if none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    pub uuid: Uuid,
    pub version: Option<(u16, u16)>,
}

impl Interface {
    pub const IXNREMOTE: Interface = Interface {
        uuid: IXNREMOTE.uuid,
        version: Some((IXNREMOTE.major, IXNREMOTE.minor)),
    };

    pub fn is_msdtc(&self) -> bool {
        self.uuid == IXNREMOTE.uuid
    }

    /// Whether a registered interface is this one: same UUID and, when a version was asked for,
    /// the same major version.
    pub(super) fn matches(&self, s: &SyntaxId) -> bool {
        s.uuid == self.uuid && self.version.is_none_or(|(major, _)| major == s.major)
    }

    /// `UUID vMAJ.MIN` (or the bare UUID), for hop details and data.
    pub(super) fn text(&self) -> String {
        match self.version {
            Some((a, b)) => format!("{} v{a}.{b}", self.uuid),
            None => self.uuid.to_string(),
        }
    }
}

/// An `epm` check: `epm://host[:135]?iface=UUID[/vMAJ.MIN]`, or config kind `epm` with
/// `host`, `port`, `iface`, `list_endpoints`.
#[derive(Debug, Clone, PartialEq)]
pub struct EpmTarget {
    pub host: String,
    pub port: u16,
    pub iface: Interface,
    /// Also dump every endpoint mapper entry into the hop's data (`entries`).
    pub list_endpoints: bool,
    /// Check reverse DNS agreement in the resolve hop.
    pub reverse_dns: bool,
}

/// What is wrong with an `epm://` URL's path or parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpmUrlError {
    #[error("invalid iface `{0}`: expected UUID or UUID/vMAJ.MIN")]
    Interface(String),
    #[error("unexpected path `{0}` (epm://HOST[:PORT]?iface=UUID[/vMAJ.MIN])")]
    Path(String),
    #[error("list_endpoints={0}: expected true or false")]
    ListEndpoints(String),
    #[error("unknown option `{0}` (known: iface, list_endpoints)")]
    UnknownOption(String),
}

/// Parses an `iface` value: `UUID` (any version) or `UUID/vMAJ.MIN`.
pub fn parse_interface(text: &str) -> Result<Interface, EpmUrlError> {
    let bad = || EpmUrlError::Interface(text.into());
    if text.contains('/') {
        let s = SyntaxId::parse(text, (0, 0)).ok_or_else(bad)?;
        Ok(Interface {
            uuid: s.uuid,
            version: Some((s.major, s.minor)),
        })
    } else {
        Ok(Interface {
            uuid: Uuid::parse(text).ok_or_else(bad)?,
            version: None,
        })
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" => Some(true),
        "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

impl EpmTarget {
    /// The config keys a `kind = "epm"` check accepts besides the common ones.
    pub const KEYS: &'static [&'static str] = &["port", "reverse_dns", "iface", "list_endpoints"];

    pub fn new(host: String) -> EpmTarget {
        EpmTarget {
            host,
            port: EPM_PORT,
            iface: Interface::IXNREMOTE,
            list_endpoints: false,
            reverse_dns: false,
        }
    }

    /// From a parsed `epm://` URL whose host is `host`. The error is a usage error.
    pub fn from_parsed_url(url: &url::Url, host: String) -> Result<EpmTarget, EpmUrlError> {
        let mut t = EpmTarget::new(host);
        t.port = url.port().unwrap_or(EPM_PORT);
        if !matches!(url.path(), "" | "/") {
            return Err(EpmUrlError::Path(url.path().into()));
        }
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "iface" => t.iface = parse_interface(&value)?,
                "list_endpoints" => {
                    t.list_endpoints = parse_bool(&value)
                        .ok_or_else(|| EpmUrlError::ListEndpoints(value.to_string()))?
                }
                other => return Err(EpmUrlError::UnknownOption(other.into())),
            }
        }
        Ok(t)
    }

    /// From a config `[[check]]` with `kind = "epm"`.
    pub fn from_table(
        raw: &crate::check_table::RawCheck,
        host: String,
    ) -> Result<EpmTarget, crate::check_table::TargetError> {
        use crate::check_table::TargetError;
        let mut t = EpmTarget::new(host);
        if let Some(p) = &raw.port {
            t.port = *p.get_ref();
        }
        if let Some(i) = &raw.iface {
            t.iface = parse_interface(i.get_ref()).map_err(|e| TargetError::At {
                offset: i.span().start,
                message: e.to_string(),
            })?;
        }
        t.list_endpoints = raw.list_endpoints.unwrap_or(false);
        t.reverse_dns = raw.reverse_dns.unwrap_or(false);
        Ok(t)
    }

    /// `epm://host:port`, plus `?iface=` when not the default.
    pub fn canonical(&self) -> String {
        let mut s = format!(
            "epm://{}:{}",
            crate::hostport::bracket_v6(&self.host),
            self.port
        );
        if self.iface != Interface::IXNREMOTE {
            s.push_str("?iface=");
            s.push_str(&self.iface.uuid.to_string());
            if let Some((a, b)) = self.iface.version {
                s.push_str(&format!("/v{a}.{b}"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epm_urls() {
        use crate::target::Target;
        let epm = |u: &str| match Target::from_url(u) {
            Ok(Target::Epm(t)) => Ok(t),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        let t = epm("epm://sql01").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.iface, t.list_endpoints),
            ("sql01", 135, Interface::IXNREMOTE, false)
        );
        assert_eq!(t.canonical(), "epm://sql01:135");
        let t = epm("epm://10.0.0.5:1135?iface=12345778-1234-ABCD-ef00-0123456789ab/v0.0&list_endpoints=true").unwrap();
        assert_eq!(t.port, 1135);
        assert_eq!(t.iface.version, Some((0, 0)));
        assert!(t.list_endpoints);
        assert_eq!(
            t.canonical(),
            "epm://10.0.0.5:1135?iface=12345778-1234-abcd-ef00-0123456789ab/v0.0"
        );
        let t = epm("epm://[2001:db8::5]?iface=338cd001-2244-31f1-aaaa-900038001003").unwrap();
        assert_eq!(t.iface.version, None);
        assert_eq!(
            t.canonical(),
            "epm://[2001:db8::5]:135?iface=338cd001-2244-31f1-aaaa-900038001003"
        );
        assert_eq!(Target::from_url(&t.canonical()).unwrap(), Target::Epm(t));
        for bad in [
            "epm://sql01?iface=nope",
            "epm://sql01?ifac=x",
            "epm://sql01/path",
            "epm://sql01?iface=906b0ce0-c70b-1067-b317-00dd010662da/vx",
        ] {
            assert!(epm(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn epm_config() {
        let text = "[[check]]\nname = \"dtc\"\nkind = \"epm\"\nhost = \"sql01\"\niface = \"12345778-1234-abcd-ef00-0123456789ab/v0.0\"\nlist_endpoints = true\n";
        let cfg = crate::config::parse(text, std::path::Path::new("t.toml")).unwrap();
        match &cfg.checks[0].target {
            crate::target::Target::Epm(t) => {
                assert_eq!(
                    (t.port, t.list_endpoints, t.iface.version),
                    (135, true, Some((0, 0)))
                );
            }
            other => panic!("{other:?}"),
        }
        let bad = "[[check]]\nname = \"dtc\"\nkind = \"epm\"\nhost = \"sql01\"\niface = \"zzz\"\n";
        let e = crate::config::parse(bad, std::path::Path::new("t.toml")).unwrap_err();
        assert_eq!((e.line, e.column), (5, 9), "{e}");
        let bad = "[[check]]\nname = \"dtc\"\nkind = \"epm\"\nhost = \"sql01\"\ndatabase = \"x\"\n";
        let e = crate::config::parse(bad, std::path::Path::new("t.toml")).unwrap_err();
        assert!(e.message.contains("database"), "{e}");
    }

    /// Every key in `KEYS` is accepted by the config layer and read into the target (none is
    /// listed but ignored).
    #[test]
    fn keys_are_accepted_and_read() {
        let value = |key: &str| match key {
            "port" => "1135",
            "reverse_dns" | "list_endpoints" => "true",
            "iface" => "\"12345778-1234-abcd-ef00-0123456789ab/v0.0\"",
            other => panic!("KEYS lists `{other}`, which this test does not know"),
        };
        let mut text = "[[check]]\nname = \"dtc\"\nkind = \"epm\"\nhost = \"sql01\"\n".to_string();
        for key in EpmTarget::KEYS {
            text.push_str(&format!("{key} = {}\n", value(key)));
        }
        let cfg = crate::config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let crate::target::Target::Epm(t) = &cfg.checks[0].target else {
            panic!("{:?}", cfg.checks[0].target);
        };
        let mut expected = EpmTarget::new("sql01".into());
        expected.port = 1135;
        expected.reverse_dns = true;
        expected.list_endpoints = true;
        expected.iface = parse_interface("12345778-1234-abcd-ef00-0123456789ab/v0.0").unwrap();
        assert_eq!(expected, *t);
    }
}
