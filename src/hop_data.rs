//! A hop's `data` ([`HopData`]): a JSON object, read and changed as a `serde_json::Map` and
//! serialized as one, with a compact typed form for the hops every check has.
//!
//! Why two forms: a report holds every result until it is written, and a `serde_json::Map`
//! (an ordered hash map of `String` keys and `Value`s) costs about a kilobyte for the few facts
//! of one `tcp` hop (its map, its one attempt's map, a heap string per key and per address).
//! At 10,000 refused ports that was more than half of the report's memory (issue 26). The
//! hops that run for every check (`resolve`, `tcp` and the other connect hops) record their
//! facts as [`Fact`]s instead: keys are `&'static str`, short strings (an IPv4 socket address,
//! a cause) sit inline, and nothing is hashed. Every other hop keeps the map.
//!
//! Both forms serialize to the same JSON, key for key in insertion order (the order
//! serde_json's `preserve_order` map keeps). Reading through the map API ([`HopData::get`],
//! `data["key"]`, iteration) works on both: the typed form builds its map on the first such
//! read and keeps it. Readers that run over every check of a run (the firewall requests) read
//! through [`HopData::datum`] instead, which reads either form in place. A change through the
//! map API (`insert`, `remove`...) turns the typed form into a map first.

use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A hop's facts (see the module). The map form is shared copy-on-write between copies of the
/// same hop result: hop `route` of 10,000 ports of one host is one judgement copied to every
/// check, its `data` one map for all of them; a copy that is changed gets a map of its own
/// first. The typed form is each hop's own. An empty one allocates nothing.
#[derive(Clone, Default)]
pub struct HopData(Repr);

#[derive(Clone, Default)]
enum Repr {
    #[default]
    Empty,
    Map(Arc<Map<String, Value>>),
    /// Boxed, not shared: a typed form is one hop's own (16 bytes less than an `Arc` for
    /// every check); a copy copies it.
    Facts(Box<Facts>),
}

/// The typed form: entries in insertion order, and the map built from them when something
/// reads them as one (never, in a run that only writes its report).
struct Facts {
    entries: Vec<(&'static str, Fact)>,
    as_map: OnceLock<Box<Map<String, Value>>>,
}

impl Clone for Facts {
    fn clone(&self) -> Facts {
        Facts::new(self.entries.clone())
    }
}

impl Facts {
    fn new(entries: Vec<(&'static str, Fact)>) -> Facts {
        Facts {
            entries,
            as_map: OnceLock::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&Fact> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn to_map(&self) -> Map<String, Value> {
        self.entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_value()))
            .collect()
    }

    fn map(&self) -> &Map<String, Value> {
        self.as_map.get_or_init(|| Box::new(self.to_map()))
    }
}

/// One value of the typed form: what a `serde_json::Value` holds, in 24 bytes, with strings
/// of up to [`ShortText::CAPACITY`] bytes (an IPv4 address and port) inline and fixed texts
/// borrowed.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    /// A non-finite number is `null`, as `serde_json::Value::from(f64)` makes it.
    F64(f64),
    Static(&'static str),
    Short(ShortText),
    Text(Box<str>),
    List(Box<[Fact]>),
    /// An object, its keys in order.
    Object(Box<[(&'static str, Fact)]>),
}

/// A string short enough to keep inline in a [`Fact`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortText {
    len: u8,
    bytes: [u8; ShortText::CAPACITY],
}

impl ShortText {
    pub const CAPACITY: usize = 22;

    fn new(text: &str) -> Option<ShortText> {
        let mut short = ShortText {
            len: 0,
            bytes: [0; ShortText::CAPACITY],
        };
        short.write_str(text).ok()?;
        Some(short)
    }

    pub fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in (`write_str`), so this always holds.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// Appends while it fits; `Err` (and the text so far) when it does not.
impl fmt::Write for ShortText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let start = usize::from(self.len);
        let end = start + s.len();
        if end > ShortText::CAPACITY {
            return Err(fmt::Error);
        }
        self.bytes[start..end].copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

impl fmt::Debug for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Fact {
    /// A string: inline when short, else on the heap.
    pub fn text(text: impl AsRef<str> + Into<String>) -> Fact {
        match ShortText::new(text.as_ref()) {
            Some(short) => Fact::Short(short),
            None => Fact::Text(text.into().into_boxed_str()),
        }
    }

    /// What `value` displays as (an address, a socket address), formatted in place when it is
    /// short: no heap string at all.
    pub fn display(value: &impl fmt::Display) -> Fact {
        let mut short = ShortText {
            len: 0,
            bytes: [0; ShortText::CAPACITY],
        };
        match write!(short, "{value}") {
            Ok(()) => Fact::Short(short),
            Err(_) => Fact::Text(value.to_string().into_boxed_str()),
        }
    }

    /// `Some` as [`Fact::display`], `None` as `null`.
    pub fn display_or_null(value: Option<&impl fmt::Display>) -> Fact {
        value.map_or(Fact::Null, Fact::display)
    }

    pub fn object(entries: Vec<(&'static str, Fact)>) -> Fact {
        Fact::Object(entries.into_boxed_slice())
    }

    /// The same value as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        match self {
            Fact::Null => Value::Null,
            Fact::Bool(b) => Value::Bool(*b),
            Fact::U64(n) => Value::from(*n),
            Fact::I64(n) => Value::from(*n),
            Fact::F64(x) => Value::from(*x),
            Fact::Static(s) => Value::from(*s),
            Fact::Short(s) => Value::from(s.as_str()),
            Fact::Text(s) => Value::from(&**s),
            Fact::List(items) => Value::Array(items.iter().map(Fact::to_value).collect()),
            Fact::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Fact::Static(s) => Some(s),
            Fact::Short(s) => Some(s.as_str()),
            Fact::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&'static str> for Fact {
    fn from(s: &'static str) -> Fact {
        Fact::Static(s)
    }
}

impl From<u64> for Fact {
    fn from(n: u64) -> Fact {
        Fact::U64(n)
    }
}

impl From<u16> for Fact {
    fn from(n: u16) -> Fact {
        Fact::U64(n.into())
    }
}

impl From<u8> for Fact {
    fn from(n: u8) -> Fact {
        Fact::U64(n.into())
    }
}

impl From<f64> for Fact {
    fn from(x: f64) -> Fact {
        Fact::F64(x)
    }
}

impl From<bool> for Fact {
    fn from(b: bool) -> Fact {
        Fact::Bool(b)
    }
}

impl From<Vec<Fact>> for Fact {
    fn from(items: Vec<Fact>) -> Fact {
        Fact::List(items.into_boxed_slice())
    }
}

/// Exactly as the `serde_json::Value` it stands for ([`Fact::to_value`]) serializes.
impl Serialize for Fact {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Fact::Null => s.serialize_unit(),
            Fact::Bool(b) => s.serialize_bool(*b),
            Fact::U64(n) => s.serialize_u64(*n),
            // As serde_json's Number: a non-negative integer is written as unsigned.
            Fact::I64(n) => match u64::try_from(*n) {
                Ok(n) => s.serialize_u64(n),
                Err(_) => s.serialize_i64(*n),
            },
            Fact::F64(x) if x.is_finite() => s.serialize_f64(*x),
            Fact::F64(_) => s.serialize_unit(),
            Fact::Static(_) | Fact::Short(_) | Fact::Text(_) => {
                s.serialize_str(self.as_str().unwrap_or_default())
            }
            Fact::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items.iter() {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Fact::Object(entries) => serialize_entries(entries, s),
        }
    }
}

fn serialize_entries<S: serde::Serializer>(
    entries: &[(&'static str, Fact)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(entries.len()))?;
    for (key, value) in entries {
        map.serialize_entry(key, value)?;
    }
    map.end()
}

/// A value of either form, read in place: what [`HopData::datum`] gives.
#[derive(Debug, Clone, Copy)]
pub enum Datum<'a> {
    Json(&'a Value),
    Fact(&'a Fact),
}

impl<'a> Datum<'a> {
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Datum::Json(v) => v.as_str(),
            Datum::Fact(f) => f.as_str(),
        }
    }

    pub fn as_u64(self) -> Option<u64> {
        match self {
            Datum::Json(v) => v.as_u64(),
            Datum::Fact(Fact::U64(n)) => Some(*n),
            Datum::Fact(Fact::I64(n)) => u64::try_from(*n).ok(),
            Datum::Fact(_) => None,
        }
    }

    /// A member of an object.
    pub fn get(self, key: &str) -> Option<Datum<'a>> {
        match self {
            Datum::Json(v) => v.get(key).map(Datum::Json),
            Datum::Fact(Fact::Object(entries)) => entries
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| Datum::Fact(v)),
            Datum::Fact(_) => None,
        }
    }

    /// The items of an array.
    pub fn items(self) -> Option<impl Iterator<Item = Datum<'a>>> {
        let (json, facts): (&[Value], &[Fact]) = match self {
            Datum::Json(Value::Array(items)) => (items, &[]),
            Datum::Fact(Fact::List(items)) => (&[], items),
            _ => return None,
        };
        Some(
            json.iter()
                .map(Datum::Json)
                .chain(facts.iter().map(Datum::Fact)),
        )
    }
}

impl HopData {
    /// No facts at all (the hop then has no `data` key).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Empty => 0,
            Repr::Map(map) => map.len(),
            Repr::Facts(facts) => facts.entries.len(),
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.datum(key).is_some()
    }

    /// The value of `key` as a `serde_json::Value`. A typed form builds its map for this (once),
    /// unless the key is not there.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match &self.0 {
            Repr::Empty => None,
            Repr::Map(map) => map.get(key),
            Repr::Facts(facts) => {
                facts.get(key)?;
                facts.map().get(key)
            }
        }
    }

    /// The value of `key`, read in place in either form (no map is built).
    pub fn datum(&self, key: &str) -> Option<Datum<'_>> {
        match &self.0 {
            Repr::Empty => None,
            Repr::Map(map) => map.get(key).map(Datum::Json),
            Repr::Facts(facts) => facts.get(key).map(Datum::Fact),
        }
    }

    /// Sets `key` to a typed value, keeping the typed form (or starting it, when there is no
    /// data yet). A key already there keeps its place, as in the map.
    pub fn insert_fact(&mut self, key: &'static str, value: Fact) {
        match &mut self.0 {
            Repr::Empty => self.0 = Repr::Facts(Box::new(Facts::new(vec![(key, value)]))),
            Repr::Facts(facts) => {
                // The map built for reads, if any, no longer says the same.
                facts.as_map = OnceLock::new();
                match facts.entries.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, old)) => *old = value,
                    None => facts.entries.push((key, value)),
                }
            }
            Repr::Map(map) => {
                Arc::make_mut(map).insert(key.to_string(), value.to_value());
            }
        }
    }

    /// See [`crate::model::HopResult::compact`]. Data shared with other results is left as it
    /// is: one copy for many checks, its spare room costs once.
    pub(crate) fn compact(&mut self) {
        match &mut self.0 {
            Repr::Empty => {}
            Repr::Map(map) => {
                if let Some(map) = Arc::get_mut(map) {
                    compact_map(map);
                }
            }
            Repr::Facts(facts) => {
                facts.entries.shrink_to_fit();
            }
        }
    }

    fn empty() -> &'static Map<String, Value> {
        static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
        EMPTY.get_or_init(Map::new)
    }

    /// As a map without keeping one: for comparisons.
    fn to_cow_map(&self) -> std::borrow::Cow<'_, Map<String, Value>> {
        use std::borrow::Cow;
        match &self.0 {
            Repr::Empty => Cow::Borrowed(HopData::empty()),
            Repr::Map(map) => Cow::Borrowed(map),
            Repr::Facts(facts) => match facts.as_map.get() {
                Some(map) => Cow::Borrowed(map),
                None => Cow::Owned(facts.to_map()),
            },
        }
    }
}

/// The same map with no spare room: rebuilt from its entries (serde_json's map cannot shrink
/// in place), each nested value compacted too.
fn compact_map(map: &mut Map<String, Value>) {
    let mut exact: Map<String, Value> = std::mem::take(map).into_iter().collect();
    for value in exact.values_mut() {
        compact_value(value);
    }
    *map = exact;
}

fn compact_value(value: &mut Value) {
    match value {
        Value::String(s) => s.shrink_to_fit(),
        Value::Array(items) => {
            items.shrink_to_fit();
            items.iter_mut().for_each(compact_value);
        }
        Value::Object(map) => compact_map(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

impl std::ops::Deref for HopData {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Map<String, Value> {
        match &self.0 {
            Repr::Empty => HopData::empty(),
            Repr::Map(map) => map,
            Repr::Facts(facts) => facts.map(),
        }
    }
}

/// A change through the map API: the typed form becomes a map first.
impl std::ops::DerefMut for HopData {
    fn deref_mut(&mut self) -> &mut Map<String, Value> {
        let map = match std::mem::take(&mut self.0) {
            Repr::Empty => Arc::default(),
            Repr::Map(map) => map,
            Repr::Facts(facts) => {
                let Facts { as_map, entries } = *facts;
                let map = match as_map.into_inner() {
                    Some(map) => *map,
                    None => Facts::new(entries).to_map(),
                };
                Arc::new(map)
            }
        };
        self.0 = Repr::Map(map);
        match &mut self.0 {
            Repr::Map(map) => Arc::make_mut(map),
            // Set just above.
            Repr::Empty | Repr::Facts(_) => unreachable!("HopData was just made a map"),
        }
    }
}

impl From<Map<String, Value>> for HopData {
    fn from(map: Map<String, Value>) -> HopData {
        HopData(if map.is_empty() {
            Repr::Empty
        } else {
            Repr::Map(Arc::new(map))
        })
    }
}

impl<'a> IntoIterator for &'a HopData {
    type Item = (&'a String, &'a Value);
    type IntoIter = serde_json::map::Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        std::ops::Deref::deref(self).iter()
    }
}

/// What the data says, whatever its form.
impl PartialEq for HopData {
    fn eq(&self, other: &HopData) -> bool {
        self.to_cow_map() == other.to_cow_map()
    }
}

/// As the map itself: the form and the shared storage are not part of what a hop says.
impl fmt::Debug for HopData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.to_cow_map(), f)
    }
}

impl Serialize for HopData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Empty => HopData::empty().serialize(s),
            Repr::Map(map) => map.serialize(s),
            Repr::Facts(facts) => serialize_entries(&facts.entries, s),
        }
    }
}

impl<'de> Deserialize<'de> for HopData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HopData, D::Error> {
        Map::deserialize(d).map(HopData::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HopKind, HopResult};
    use serde_json::json;

    /// `data` shared between copies serializes exactly as the map it holds, a change to one copy
    /// leaves the other alone, and compacting keeps every key, value and their order.
    #[test]
    fn shared_data_reads_and_writes_as_a_plain_map() {
        let original = HopResult::pass(HopKind::Route, "r")
            .with_data("interface", "lo")
            .with_data("routes", json!([{"address": "127.0.0.1", "gateway": null}]))
            .with_data("port", 1433);
        let mut plain = Map::new();
        plain.insert("interface".into(), "lo".into());
        plain.insert(
            "routes".into(),
            json!([{"address": "127.0.0.1", "gateway": null}]),
        );
        plain.insert("port".into(), 1433.into());
        assert_eq!(
            serde_json::to_string_pretty(&original.data).unwrap(),
            serde_json::to_string_pretty(&plain).unwrap()
        );

        let mut copy = original.clone();
        assert!(matches!(
            (&copy.data.0, &original.data.0),
            (Repr::Map(a), Repr::Map(b)) if Arc::ptr_eq(a, b)
        ));
        copy.data.insert("extra".into(), true.into());
        assert!(!original.data.contains_key("extra"));
        assert_eq!(copy.data.len(), 4);

        let mut compacted = original.clone();
        compacted.data = (*original.data).clone().into();
        compacted.compact();
        assert_eq!(compacted, original);
        assert_eq!(
            serde_json::to_string(&compacted).unwrap(),
            serde_json::to_string(&original).unwrap()
        );
        // No data: no key, nothing allocated.
        let bare = HopResult::pass(HopKind::Tcp, "t");
        assert!(bare.data.is_empty() && matches!(bare.data.0, Repr::Empty));
        assert!(!serde_json::to_string(&bare).unwrap().contains("\"data\""));
    }

    /// Facts of every shape, and the `json!` value they stand for.
    fn facts_and_their_json() -> (HopData, Value) {
        let mut data = HopData::default();
        data.insert_fact(
            "source",
            Fact::display(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()),
        );
        data.insert_fact(
            "attempts",
            vec![Fact::object(vec![
                (
                    "address",
                    Fact::display(&"127.0.0.1:20000".parse::<std::net::SocketAddr>().unwrap()),
                ),
                ("source", Fact::Null),
                ("status", "fail".into()),
                ("cause", Fact::Static("refused")),
                ("duration_seconds", 0.000381.into()),
                ("not_a_number", f64::NAN.into()),
                ("reset_ttl", 64u8.into()),
                ("negative", Fact::I64(-3)),
                ("positive", Fact::I64(3)),
                ("on", true.into()),
                ("long", Fact::text("2001:db8:1234:5678:9abc:def0:1234:5678")),
                ("empty_list", Vec::<Fact>::new().into()),
                ("empty_object", Fact::object(vec![])),
            ])]
            .into(),
        );
        data.insert_fact("port", 20000u16.into());
        let json = json!({
            "source": "127.0.0.1",
            "attempts": [{
                "address": "127.0.0.1:20000",
                "source": null,
                "status": "fail",
                "cause": "refused",
                "duration_seconds": 0.000381,
                "not_a_number": f64::NAN,
                "reset_ttl": 64,
                "negative": -3,
                "positive": 3,
                "on": true,
                "long": "2001:db8:1234:5678:9abc:def0:1234:5678",
                "empty_list": [],
                "empty_object": {},
            }],
            "port": 20000,
        });
        (data, json)
    }

    /// The typed form writes byte for byte what the map it stands for writes, in key order,
    /// compact and pretty; reads the same through the map API and in place; and turns into
    /// that map when changed through the map API.
    #[test]
    fn typed_facts_write_and_read_as_the_map_they_stand_for() {
        let (data, json) = facts_and_their_json();
        assert!(matches!(data.0, Repr::Facts(_)));
        assert_eq!(
            serde_json::to_string(&data).unwrap(),
            serde_json::to_string(&json).unwrap()
        );
        assert_eq!(
            serde_json::to_string_pretty(&data).unwrap(),
            serde_json::to_string_pretty(&json).unwrap()
        );
        let plain: HopData = json.as_object().unwrap().clone().into();
        assert_eq!(data, plain);
        assert_eq!(format!("{data:?}"), format!("{plain:?}"));

        // In place: no map built.
        fn first_attempt(data: &HopData) -> Option<Datum<'_>> {
            data.datum("attempts")?.items()?.next()
        }
        let attempt = first_attempt(&data).unwrap();
        assert_eq!(
            attempt.get("address").unwrap().as_str(),
            Some("127.0.0.1:20000")
        );
        assert_eq!(attempt.get("reset_ttl").unwrap().as_u64(), Some(64));
        assert!(attempt.get("nothing").is_none());
        assert_eq!(data.datum("port").unwrap().as_u64(), Some(20000));
        assert!(!data.contains_key("entries") && data.get("entries").is_none());
        match &data.0 {
            Repr::Facts(facts) => assert!(facts.as_map.get().is_none()),
            _ => unreachable!(),
        }
        // Through the map API, as the same map (the same reads on the plain map's form).
        assert_eq!(data["attempts"][0]["cause"], "refused");
        assert_eq!(data.get("source"), plain.get("source"));
        assert_eq!(
            data.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["source", "attempts", "port"]
        );
        let in_place = first_attempt(&plain).unwrap();
        assert_eq!(in_place.get("cause").unwrap().as_str(), Some("refused"));

        // A typed insert on an existing key keeps its place; a map insert makes it a map.
        let mut changed = data.clone();
        changed.insert_fact("source", Fact::Static("198.18.0.1"));
        assert_eq!(
            serde_json::to_string(&changed).unwrap(),
            serde_json::to_string(&json)
                .unwrap()
                .replace("127.0.0.1\",\"attempts", "198.18.0.1\",\"attempts")
        );
        assert_eq!(data.datum("source").unwrap().as_str(), Some("127.0.0.1"));
        changed.insert("extra".into(), json!(1));
        assert!(matches!(changed.0, Repr::Map(_)));
        assert_eq!(changed.len(), 4);
        assert_eq!(
            changed.keys().next_back().map(String::as_str),
            Some("extra")
        );
        changed.insert_fact("port", 1u16.into());
        assert_eq!(changed["port"], 1);
    }

    /// The point of the typed form: a value is 24 bytes and an IPv4 socket address needs no
    /// heap string.
    #[test]
    fn a_fact_is_small() {
        assert!(
            std::mem::size_of::<Fact>() <= 24,
            "{}",
            std::mem::size_of::<Fact>()
        );
        assert!(matches!(
            Fact::display(
                &"255.255.255.255:65535"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
            ),
            Fact::Short(_)
        ));
        assert!(matches!(Fact::text("x".repeat(23)), Fact::Text(_)));
    }
}
