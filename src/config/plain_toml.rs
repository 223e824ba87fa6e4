//! The plain subset of TOML that config files of many checks are written in (one `key = value`
//! per line: basic strings without escapes, decimal integers, booleans; `[defaults]` and
//! `[[check]]` headers; comments), read one `[[check]]` table at a time ([`each_check`]) into
//! the same [`RawCheck`] values serde would give.
//!
//! Why: the `toml` crate builds a whole editable document (every key, value, span and piece of
//! whitespace) before serde sees it; for a generated config of 10,000 checks (700 KB) that was
//! 40-60 ms, most of the time it took to plan the run and more than nmap needs to start. This
//! reader does one pass over the lines and allocates only the values.
//!
//! It never decides anything on its own: a line outside the subset (an escape, a literal or
//! multi-line string, an inline table, a dotted or quoted key, an array, a float, a date), an
//! unknown key, a value of the wrong type or out of range, a repeated key or `[defaults]` table
//! all make it answer `None`, and the caller parses the file with `toml` as before: the same
//! result, and the same error with its line and column. What it does accept gives the very
//! value (spans included) `toml` gives; `tests` compare the two.

use std::ops::Range;

use toml::Spanned;

#[cfg(test)]
use super::raw::RawConfig;
use super::raw::RawDefaults;
use crate::check_table::RawCheck;

/// `text` read as the plain subset, or `None` when anything in it is outside the subset.
#[cfg(test)]
pub fn parse(text: &str) -> Option<RawConfig> {
    let mut check = Vec::new();
    let defaults = each_check(text, |span, table| {
        check.push(Spanned::new(span, std::mem::take(table)))
    })?;
    Some(RawConfig { defaults, check })
}

/// `text` read as the plain subset: each `[[check]]` table handed to `on_check` as soon as it is
/// complete (in file order, with toml's span of it; the callee may take its values, the table is
/// cleared for the next one in place rather than moved about), and the `[defaults]` table returned at the
/// end; `None` when anything in the file is outside the subset (then whatever `on_check` was
/// given must be thrown away: the caller parses the file with `toml` instead). One table at a
/// time: a config of 10,000 checks never holds 10,000 tables of every key any kind knows (about
/// 9 MB written and page-faulted in, for checks that keep a tenth of it).
pub fn each_check(
    text: &str,
    mut on_check: impl FnMut(Range<usize>, &mut RawCheck),
) -> Option<RawDefaults> {
    let bytes = text.as_bytes();
    let mut defaults = RawDefaults::default();
    // The `[[check]]` table being read and toml's span of it: from its header to the end of its
    // last value.
    let mut check = RawCheck::default();
    let mut span: Option<Range<usize>> = None;
    let mut table = Table::Root;
    let mut seen_defaults = false;
    // Keys set in the current table, as bits of `Key` (a repeated key is TOML's error to give).
    let mut set: u64 = 0;
    let mut start = 0;
    while start < bytes.len() {
        let end = memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
        let mut line_end = end;
        // CRLF; a lone CR is not a TOML line ending (toml's to reject).
        if end < bytes.len() && line_end > start && bytes[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        let line = Line {
            text,
            pos: start,
            end: line_end,
        };
        match line.classify()? {
            Content::Blank => {}
            Content::Header(Header::Check) => {
                if let Some(done) = span.replace(line.header_span()) {
                    on_check(done, &mut check);
                    check = RawCheck::default();
                }
                table = Table::Check;
                set = 0;
            }
            Content::Header(Header::Defaults) => {
                if seen_defaults {
                    return None;
                }
                seen_defaults = true;
                table = Table::Defaults;
                set = 0;
            }
            Content::Pair { key, value, end } => {
                let key_id = Key::of(key.0, table)?;
                if set & (1 << key_id as u64) != 0 {
                    return None;
                }
                set |= 1 << key_id as u64;
                match table {
                    Table::Root => return None,
                    Table::Defaults => assign_default(&mut defaults, key_id, value)?,
                    Table::Check => {
                        span.as_mut()?.end = end;
                        assign_check(&mut check, key_id, value)?;
                    }
                }
            }
        }
        start = end + 1;
    }
    if let Some(done) = span {
        on_check(done, &mut check);
    }
    Some(defaults)
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Root,
    Defaults,
    Check,
}

enum Header {
    Check,
    Defaults,
}

/// A value as written, and where it is in the text (quotes included for a string).
enum Value<'a> {
    Str(&'a str, Range<usize>),
    Int(i64, Range<usize>),
    Bool(bool),
}

enum Content<'a> {
    Blank,
    Header(Header),
    Pair {
        key: (&'a str, Range<usize>),
        value: Value<'a>,
        /// Where the value ends.
        end: usize,
    },
}

struct Line<'a> {
    text: &'a str,
    pos: usize,
    end: usize,
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_bare_key(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl<'a> Line<'a> {
    fn bytes(&self) -> &'a [u8] {
        &self.text.as_bytes()[..self.end]
    }

    fn skip_space(&self, mut i: usize) -> usize {
        let b = self.bytes();
        while i < self.end && is_space(b[i]) {
            i += 1;
        }
        i
    }

    /// Whether the rest of the line from `i` is blank or a comment without control characters.
    fn rest_is_blank(&self, i: usize) -> bool {
        let i = self.skip_space(i);
        if i == self.end {
            return true;
        }
        let b = self.bytes();
        b[i] == b'#'
            && b[i + 1..self.end]
                .iter()
                .all(|c| *c == b'\t' || (*c >= 0x20 && *c != 0x7f))
    }

    fn classify(&self) -> Option<Content<'a>> {
        let b = self.bytes();
        let i = self.skip_space(self.pos);
        if self.rest_is_blank(i) {
            return Some(Content::Blank);
        }
        if b[i] == b'[' {
            let (header, after) = if b[i..].starts_with(b"[[check]]") {
                (Header::Check, i + 9)
            } else if b[i..].starts_with(b"[defaults]") {
                (Header::Defaults, i + 10)
            } else {
                return None;
            };
            return self.rest_is_blank(after).then_some(Content::Header(header));
        }
        let key_start = i;
        let mut j = i;
        while j < self.end && is_bare_key(b[j]) {
            j += 1;
        }
        if j == key_start {
            return None;
        }
        let key = (&self.text[key_start..j], key_start..j);
        let j = self.skip_space(j);
        if j >= self.end || b[j] != b'=' {
            return None;
        }
        let v = self.skip_space(j + 1);
        if v >= self.end {
            return None;
        }
        let (value, end) = self.value(v)?;
        self.rest_is_blank(end)
            .then_some(Content::Pair { key, value, end })
    }

    /// The value starting at `i`, and where it ends.
    fn value(&self, i: usize) -> Option<(Value<'a>, usize)> {
        let b = self.bytes();
        match b[i] {
            b'"' => {
                if b[i..].starts_with(b"\"\"\"") {
                    return None;
                }
                let mut j = i + 1;
                while j < self.end && b[j] != b'"' {
                    let c = b[j];
                    if c == b'\\' || (c < 0x20 && c != b'\t') || c == 0x7f {
                        return None;
                    }
                    j += 1;
                }
                if j >= self.end {
                    return None;
                }
                Some((Value::Str(&self.text[i + 1..j], i..j + 1), j + 1))
            }
            b't' if b[i..].starts_with(b"true") => Some((Value::Bool(true), i + 4)),
            b'f' if b[i..].starts_with(b"false") => Some((Value::Bool(false), i + 5)),
            b'+' | b'-' | b'0'..=b'9' => {
                let mut j = i;
                if matches!(b[j], b'+' | b'-') {
                    j += 1;
                }
                let digits = j;
                while j < self.end && b[j].is_ascii_digit() {
                    j += 1;
                }
                let n = j - digits;
                // No digits, a leading zero, or a float, date, hex... : toml's to judge.
                if n == 0 || (n > 1 && b[digits] == b'0') {
                    return None;
                }
                if j < self.end && !is_space(b[j]) && b[j] != b'#' {
                    return None;
                }
                let value: i64 = self.text[i..j].parse().ok()?;
                Some((Value::Int(value, i..j), j))
            }
            _ => None,
        }
    }

    /// toml's span of an array-of-tables entry: from its header's first `[`.
    fn header_span(&self) -> Range<usize> {
        let i = self.skip_space(self.pos);
        i..i + 9
    }
}

/// The keys the subset knows, per table. Anything else is toml's to accept or reject.
#[derive(Clone, Copy)]
enum Key {
    Name,
    Kind,
    Target,
    Host,
    Port,
    From,
    To,
    Timeout,
    ReverseDns,
    Hold,
    Instance,
    Database,
    User,
    PasswordEnv,
    PasswordFile,
    Auth,
    Encrypt,
    TrustServerCertificate,
    Tx,
    LinkedServer,
    Sslmode,
    Sslrootcert,
    Iface,
    ListEndpoints,
    Role,
    // [defaults]
    Concurrency,
    Zone,
}

impl Key {
    fn of(name: &str, table: Table) -> Option<Key> {
        let key = match (table, name) {
            (Table::Defaults, "timeout") => Key::Timeout,
            (Table::Defaults, "concurrency") => Key::Concurrency,
            (Table::Defaults, "zone") => Key::Zone,
            (Table::Defaults | Table::Root, _) => return None,
            (Table::Check, name) => match name {
                "name" => Key::Name,
                "kind" => Key::Kind,
                "target" => Key::Target,
                "host" => Key::Host,
                "port" => Key::Port,
                "from" => Key::From,
                "to" => Key::To,
                "timeout" => Key::Timeout,
                "reverse_dns" => Key::ReverseDns,
                "hold" => Key::Hold,
                "instance" => Key::Instance,
                "database" => Key::Database,
                "user" => Key::User,
                "password_env" => Key::PasswordEnv,
                "password_file" => Key::PasswordFile,
                "auth" => Key::Auth,
                "encrypt" => Key::Encrypt,
                "trust_server_certificate" => Key::TrustServerCertificate,
                "tx" => Key::Tx,
                "linked_server" => Key::LinkedServer,
                "sslmode" => Key::Sslmode,
                "sslrootcert" => Key::Sslrootcert,
                "iface" => Key::Iface,
                "list_endpoints" => Key::ListEndpoints,
                "role" => Key::Role,
                _ => return None,
            },
        };
        Some(key)
    }
}

fn spanned_str(value: Value<'_>) -> Option<Spanned<String>> {
    match value {
        Value::Str(s, span) => Some(Spanned::new(span, s.to_string())),
        _ => None,
    }
}

fn plain_str(value: Value<'_>) -> Option<String> {
    match value {
        Value::Str(s, _) => Some(s.to_string()),
        _ => None,
    }
}

fn boolean(value: Value<'_>) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(b),
        _ => None,
    }
}

fn assign_default(defaults: &mut RawDefaults, key: Key, value: Value<'_>) -> Option<()> {
    match key {
        Key::Timeout => defaults.timeout = Some(spanned_str(value)?),
        Key::Concurrency => match value {
            Value::Int(n, _) => defaults.concurrency = Some(usize::try_from(n).ok()?),
            _ => return None,
        },
        Key::Zone => defaults.zone = Some(plain_str(value)?),
        _ => return None,
    }
    Some(())
}

fn assign_check(check: &mut RawCheck, key: Key, value: Value<'_>) -> Option<()> {
    let slot = match key {
        Key::Port => {
            let Value::Int(n, span) = value else {
                return None;
            };
            check.port = Some(Spanned::new(span, u16::try_from(n).ok()?));
            return Some(());
        }
        Key::From => {
            check.from = Some(plain_str(value)?);
            return Some(());
        }
        Key::To => {
            check.to = Some(plain_str(value)?);
            return Some(());
        }
        Key::ReverseDns => {
            check.reverse_dns = Some(boolean(value)?);
            return Some(());
        }
        Key::TrustServerCertificate => {
            check.trust_server_certificate = Some(boolean(value)?);
            return Some(());
        }
        Key::ListEndpoints => {
            check.list_endpoints = Some(boolean(value)?);
            return Some(());
        }
        Key::Name => &mut check.name,
        Key::Kind => &mut check.kind,
        Key::Target => &mut check.target,
        Key::Host => &mut check.host,
        Key::Timeout => &mut check.timeout,
        Key::Hold => &mut check.hold,
        Key::Instance => &mut check.instance,
        Key::Database => &mut check.database,
        Key::User => &mut check.user,
        Key::PasswordEnv => &mut check.password_env,
        Key::PasswordFile => &mut check.password_file,
        Key::Auth => &mut check.auth,
        Key::Encrypt => &mut check.encrypt,
        Key::Tx => &mut check.tx,
        Key::LinkedServer => &mut check.linked_server,
        Key::Sslmode => &mut check.sslmode,
        Key::Sslrootcert => &mut check.sslrootcert,
        Key::Iface => &mut check.iface,
        Key::Role => &mut check.role,
        Key::Concurrency | Key::Zone => return None,
    };
    *slot = Some(spanned_str(value)?);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `toml` itself makes of `text` (spans included), for comparison.
    fn by_toml(text: &str) -> String {
        let raw: RawConfig = crate::config::from_toml(text).expect("valid TOML");
        format!("{raw:#?}")
    }

    /// Every config the subset accepts reads exactly as toml reads it, spans included (the
    /// positions of later errors depend on them).
    #[test]
    fn accepted_configs_read_as_toml_reads_them() {
        let configs = [
            "",
            "# only a comment\n\n",
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 1433\n",
            // CRLF, tabs, comments after values, no spaces around `=`, a header comment.
            "[defaults]\r\ntimeout = \"2s\"\t# two\r\nconcurrency = 64\r\nzone = \"web\"\r\n\r\n\
             [[check]] # first\r\nname=\"a\"\r\n\ttarget = \"tcp://db:1\"\r\nfrom = \"web\"\r\nto = \"sql\"\r\n",
            // Booleans, every string key, non-ASCII text, a port of 0 and of 65535.
            "[[check]]\nname = \"é ü\"\nkind = \"mssql\"\nhost = \"sql01\"\nport = 0\nreverse_dns = false\n\
             instance = \"I\"\ndatabase = \"d\"\nuser = \"u\"\npassword_env = \"P\"\nauth = \"sql\"\n\
             encrypt = \"strict\"\ntrust_server_certificate = true\ntx = \"local\"\n\
             linked_server = \"L\"\nhold = \"5s\"\ntimeout = \"1s\"\n\
             [[check]]\nname = \"b\"\nkind = \"postgres\"\nhost = \"pg\"\nport = 65535\n\
             password_file = \"/p\"\nsslmode = \"require\"\nsslrootcert = \"/c\"\n\
             [[check]]\nname = \"c\"\nkind = \"epm\"\nhost = \"h\"\niface = \"x\"\n\
             list_endpoints = true\n[[check]]\nname = \"d\"\nkind = \"msdtc\"\nrole = \"both\"\n\
             [defaults]\nzone = \"z\"\n",
            // An empty table, and no newline at the end.
            "[[check]]\n[[check]]\nname = \"x\"",
            "  [[check]]  \n  name = \"x\"  \n",
        ];
        for text in configs {
            let fast = parse(text).unwrap_or_else(|| panic!("outside the subset: {text:?}"));
            assert_eq!(format!("{fast:#?}"), by_toml(text), "{text:?}");
        }
    }

    /// Anything outside the subset is left to toml: no guess, whether toml accepts it or not.
    #[test]
    fn anything_else_is_left_to_toml() {
        let outside = [
            "[[check]]\nname = \"a\\tb\"\n",
            "[[check]]\nname = 'literal'\n",
            "[[check]]\nname = \"\"\"multi\"\"\"\n",
            "[[check]]\nname = \"unterminated\n",
            "[[ check ]]\nname = \"a\"\n",
            "[check]\nname = \"a\"\n",
            "[[check]]\nname.first = \"a\"\n",
            "[[check]]\n\"name\" = \"a\"\n",
            "[[check]]\nname = \"a\"\nname = \"b\"\n",
            "[[check]]\nport = 65536\n",
            "[[check]]\nport = -1\n",
            "[[check]]\nport = 01\n",
            "[[check]]\nport = 1_000\n",
            "[[check]]\nport = 0x10\n",
            "[[check]]\nport = 1.5\n",
            "[[check]]\nport = \"1\"\n",
            "[[check]]\nname = 1\n",
            "[[check]]\nreverse_dns = \"yes\"\n",
            "[[check]]\nreverse_dns = truely\n",
            "[[check]]\nunknown = \"a\"\n",
            "[[check]]\nname = [\"a\"]\n",
            "[[check]]\nname = { a = 1 }\n",
            "[[check]]\nname = \"a\" trailing\n",
            "name = \"top level\"\n",
            "[defaults]\n[defaults]\n",
            "[defaults]\nconcurrency = -1\n",
            "[defaults]\nport = 1\n",
            "[other]\n",
            "[[check]]\nname = \"a\"\r",
            "[[check]]\nname = \"a\" # bell \u{7}\n",
            "[[check]]\nname = \"a\"\nwhen = 1979-05-27\n",
        ];
        for text in outside {
            assert!(parse(text).is_none(), "{text:?}");
        }
    }

    /// A generated config of many checks (what the benchmarks and large sites use) is inside the
    /// subset and reads as toml reads it.
    #[test]
    fn a_generated_config_of_many_checks() {
        let mut text = String::from("[defaults]\ntimeout = \"3s\"\n\n");
        for i in 0..2_000 {
            text.push_str(&format!(
                "[[check]]\nname = \"p{i}\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\n\n",
                20_000 + i
            ));
        }
        let fast = parse(&text).expect("inside the subset");
        assert_eq!(fast.check.len(), 2_000);
        assert_eq!(format!("{fast:#?}"), by_toml(&text));
    }
}
