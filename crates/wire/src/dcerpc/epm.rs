//! The endpoint mapper operations (C706 appendix O, MS-RPCE 2.2.1.2): `ept_lookup` (opnum 2) and
//! `ept_map` (opnum 3) in NDR, and protocol towers (the packed floor list describing a binding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ndr::{Reader, Writer};
use super::{DecodeError, SyntaxId, Uuid, NDR_SYNTAX};

pub const OPNUM_LOOKUP: u16 = 2;
pub const OPNUM_MAP: u16 = 3;

/// `ept_s_not_registered`: nothing (more) registered for what was asked.
pub const EPT_S_NOT_REGISTERED: u32 = 0x16c9_a0d6;

pub const INQUIRY_ALL_ELTS: u32 = 0;
pub const INQUIRY_MATCH_BY_IF: u32 = 1;
/// `rpc_c_vers_all`.
pub const VERS_ALL: u32 = 1;
/// Entries per call (the protocol's maximum).
pub const MAX_ENTS: u32 = 500;

// Tower floor protocol identifiers.
pub const PROTO_TCP: u8 = 0x07;
pub const PROTO_UDP: u8 = 0x08;
pub const PROTO_IP: u8 = 0x09;
pub const PROTO_RPC_CL: u8 = 0x0a;
pub const PROTO_RPC_CO: u8 = 0x0b;
pub const PROTO_UUID: u8 = 0x0d;
pub const PROTO_NAMED_PIPE: u8 = 0x0f;
pub const PROTO_LRPC: u8 = 0x10;
pub const PROTO_NETBIOS: u8 = 0x11;
pub const PROTO_HTTP: u8 = 0x1f;

/// An `ept_lookup_handle_t` context handle (20 opaque bytes; all zero = none / done).
pub type ContextHandle = [u8; 20];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    pub lhs: Vec<u8>,
    pub rhs: Vec<u8>,
}

impl Floor {
    pub fn protocol(&self) -> u8 {
        self.lhs.first().copied().unwrap_or(0)
    }

    fn rhs_u16_be(&self) -> Option<u16> {
        match self.rhs.as_slice() {
            [a, b] => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }

    /// An address floor's address: 4 octets are IPv4 (C706); 16 octets are read as IPv6, the
    /// form an IPv6-capable mapper writes in the same floor (C706 defines no separate IPv6
    /// floor). Any other length is not an address.
    fn rhs_ip(&self) -> Option<IpAddr> {
        if let Ok(v4) = <[u8; 4]>::try_from(self.rhs.as_slice()) {
            return Some(IpAddr::V4(Ipv4Addr::from(v4)));
        }
        <[u8; 16]>::try_from(self.rhs.as_slice())
            .ok()
            .map(|v6| IpAddr::V6(Ipv6Addr::from(v6)))
    }

    fn rhs_text(&self) -> String {
        let text = self.rhs.split(|b| *b == 0).next().unwrap_or(&[]);
        String::from_utf8_lossy(text).into_owned()
    }

    /// A UUID floor (interface or transfer syntax): lhs 0x0d + UUID + major, rhs minor.
    fn syntax(&self) -> Option<SyntaxId> {
        if self.lhs.len() != 19 || self.protocol() != PROTO_UUID || self.rhs.len() != 2 {
            return None;
        }
        let mut u = [0u8; 16];
        u.copy_from_slice(&self.lhs[1..17]);
        Some(SyntaxId {
            uuid: Uuid::from_le_bytes(u),
            major: u16::from_le_bytes([self.lhs[17], self.lhs[18]]),
            minor: u16::from_le_bytes([self.rhs[0], self.rhs[1]]),
        })
    }

    fn of_syntax(s: &SyntaxId) -> Floor {
        let mut lhs = vec![PROTO_UUID];
        lhs.extend_from_slice(&s.uuid.to_le_bytes());
        lhs.extend_from_slice(&s.major.to_le_bytes());
        Floor {
            lhs,
            rhs: s.minor.to_le_bytes().to_vec(),
        }
    }
}

/// A protocol tower: interface, transfer syntax, RPC protocol, then transport floors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tower {
    pub floors: Vec<Floor>,
}

impl Tower {
    /// Decodes the packed tower octets (little-endian lengths, no NDR alignment).
    pub fn decode(bytes: &[u8]) -> Result<Tower, DecodeError> {
        let mut r = Reader::new(bytes);
        let le16 = |r: &mut Reader<'_>, what| -> Result<u16, DecodeError> {
            let b = r.bytes(2, what)?;
            Ok(u16::from_le_bytes([b[0], b[1]]))
        };
        let count = le16(&mut r, "tower floor count")?;
        // Each floor takes at least 4 bytes: a count the data cannot hold is garbage.
        if count as usize * 4 > r.remaining() {
            return Err(DecodeError::invalid(
                "tower",
                format!("{count} floors in {} bytes", bytes.len()),
            ));
        }
        let mut floors = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let n = le16(&mut r, "tower floor")? as usize;
            let lhs = r.bytes(n, "tower floor lhs")?.to_vec();
            let n = le16(&mut r, "tower floor")? as usize;
            let rhs = r.bytes(n, "tower floor rhs")?.to_vec();
            floors.push(Floor { lhs, rhs });
        }
        Ok(Tower { floors })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(self.floors.len() as u16).to_le_bytes());
        for f in &self.floors {
            v.extend_from_slice(&(f.lhs.len() as u16).to_le_bytes());
            v.extend_from_slice(&f.lhs);
            v.extend_from_slice(&(f.rhs.len() as u16).to_le_bytes());
            v.extend_from_slice(&f.rhs);
        }
        v
    }

    /// The ncacn_ip_tcp tower for `iface` at `ip`:`port` (0.0.0.0:0 asks the mapper to fill in).
    pub fn tcp(iface: &SyntaxId, ip: Ipv4Addr, port: u16) -> Tower {
        Tower::tcp_at(iface, IpAddr::V4(ip), port)
    }

    /// The ncacn_ip_tcp tower for `iface` at `ip`:`port`, IPv6 written as a 16-octet address
    /// floor (see [`Floor`]'s address decoding).
    pub fn tcp_at(iface: &SyntaxId, ip: IpAddr, port: u16) -> Tower {
        let address = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        Tower {
            floors: vec![
                Floor::of_syntax(iface),
                Floor::of_syntax(&NDR_SYNTAX),
                Floor {
                    lhs: vec![PROTO_RPC_CO],
                    rhs: vec![0, 0],
                },
                Floor {
                    lhs: vec![PROTO_TCP],
                    rhs: port.to_be_bytes().to_vec(),
                },
                Floor {
                    lhs: vec![PROTO_IP],
                    rhs: address,
                },
            ],
        }
    }

    /// The interface in floor 1, if well formed.
    pub fn interface(&self) -> Option<SyntaxId> {
        self.floors.first().and_then(Floor::syntax)
    }

    fn transport(&self) -> &[Floor] {
        self.floors.get(3..).unwrap_or(&[])
    }

    fn find(&self, proto: u8) -> Option<&Floor> {
        self.transport().iter().find(|f| f.protocol() == proto)
    }

    /// The protocol sequence: `ncacn_ip_tcp`, `ncalrpc`, `ncacn_np`, `ncacn_http`, `ncadg_ip_udp`,
    /// or `unknown`.
    pub fn protseq(&self) -> &'static str {
        match self.transport().first().map(Floor::protocol) {
            Some(PROTO_TCP) => "ncacn_ip_tcp",
            Some(PROTO_UDP) => "ncadg_ip_udp",
            Some(PROTO_NAMED_PIPE) => "ncacn_np",
            Some(PROTO_LRPC) => "ncalrpc",
            Some(PROTO_HTTP) => "ncacn_http",
            _ => "unknown",
        }
    }

    /// For an ncacn_ip_tcp tower: the TCP port (and the advertised IPv4 or IPv6 address, if any).
    pub fn tcp_endpoint(&self) -> Option<(Option<IpAddr>, u16)> {
        if self.floors.get(2).map(Floor::protocol) != Some(PROTO_RPC_CO)
            || self.protseq() != "ncacn_ip_tcp"
        {
            return None;
        }
        let port = self.find(PROTO_TCP)?.rhs_u16_be()?;
        let ip = self.find(PROTO_IP).and_then(Floor::rhs_ip);
        Some((ip, port))
    }

    /// The string binding as rpcdump / impacket print it, e.g. `ncacn_ip_tcp:10.0.0.5[49667]`,
    /// `ncalrpc:[LRPC-1234]`, `ncacn_np:\\\\HOST[\\pipe\\lsass]`.
    pub fn binding(&self) -> String {
        // Port-like floors set a pattern; the address floor that follows completes it.
        let mut pattern: Option<(String, String)> = None; // (prefix, suffix)
        for f in self.transport() {
            let p = f.protocol();
            match p {
                PROTO_TCP | PROTO_UDP | PROTO_HTTP => {
                    let name = match p {
                        PROTO_TCP => "ncacn_ip_tcp",
                        PROTO_UDP => "ncadg_ip_udp",
                        _ => "ncacn_http",
                    };
                    let port = f
                        .rhs_u16_be()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "?".into());
                    pattern = Some((format!("{name}:"), format!("[{port}]")));
                }
                PROTO_IP => {
                    // IPv6 in brackets, as in a URL, so the port suffix stays unambiguous.
                    let ip = match f.rhs_ip() {
                        Some(IpAddr::V4(v4)) => v4.to_string(),
                        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
                        None => "?".into(),
                    };
                    return match pattern {
                        Some((pre, post)) => format!("{pre}{ip}{post}"),
                        None => format!("IP: {ip}"),
                    };
                }
                PROTO_NAMED_PIPE => {
                    pattern = Some(("ncacn_np:".into(), format!("[{}]", f.rhs_text())))
                }
                PROTO_LRPC => return format!("ncalrpc:[{}]", f.rhs_text()),
                0x01 | PROTO_NETBIOS => {
                    return match pattern {
                        Some((pre, post)) => format!("{pre}{}{post}", f.rhs_text()),
                        None => format!("NetBIOS: {}", f.rhs_text()),
                    };
                }
                other => return format!("unknown_proto_0x{other:x}:[0]"),
            }
        }
        match pattern {
            Some((pre, post)) => format!("{pre}{post}"),
            None => String::new(),
        }
    }
}

/// One endpoint mapper entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The object UUID (MSDTC puts its CID here for IXnRemote); nil for most interfaces.
    pub object: Uuid,
    /// The tower, or why it could not be decoded (one bad tower does not spoil the list).
    pub tower: Option<Result<Tower, DecodeError>>,
    pub annotation: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    pub inquiry_type: u32,
    pub object: Option<Uuid>,
    pub iface: Option<SyntaxId>,
    pub vers_option: u32,
    pub handle: ContextHandle,
    pub max_ents: u32,
}

impl LookupRequest {
    /// Every entry (rpcdump / PortQry -e).
    pub fn all(handle: ContextHandle) -> LookupRequest {
        LookupRequest {
            inquiry_type: INQUIRY_ALL_ELTS,
            object: None,
            iface: None,
            vers_option: VERS_ALL,
            handle,
            max_ents: MAX_ENTS,
        }
    }

    /// The entries of one interface, any version.
    pub fn by_interface(iface: SyntaxId, handle: ContextHandle) -> LookupRequest {
        LookupRequest {
            inquiry_type: INQUIRY_MATCH_BY_IF,
            object: None,
            iface: Some(iface),
            vers_option: VERS_ALL,
            handle,
            max_ents: MAX_ENTS,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.inquiry_type);
        match &self.object {
            Some(u) => {
                w.u32(1);
                w.uuid(u);
            }
            None => w.u32(0),
        }
        match &self.iface {
            Some(s) => {
                w.u32(2);
                w.uuid(&s.uuid);
                w.u16(s.major);
                w.u16(s.minor);
            }
            None => w.u32(0),
        }
        w.u32(self.vers_option);
        w.align(4);
        w.bytes(&self.handle);
        w.u32(self.max_ents);
        w.into_inner()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupResponse {
    pub handle: ContextHandle,
    pub entries: Vec<Entry>,
    pub status: u32,
}

fn read_handle(r: &mut Reader<'_>) -> Result<ContextHandle, DecodeError> {
    r.align(4, "context handle")?;
    let b = r.bytes(20, "context handle")?;
    let mut h = [0u8; 20];
    h.copy_from_slice(b);
    Ok(h)
}

/// Reads a conformant-varying array header, checking that `actual` elements of at least
/// `min_size` bytes can fit in what is left (so a lying count cannot make us allocate).
fn read_cv_header(
    r: &mut Reader<'_>,
    what: &'static str,
    min_size: usize,
) -> Result<usize, DecodeError> {
    let max = r.u32(what)?;
    let offset = r.u32(what)?;
    let actual = r.u32(what)?;
    if offset != 0 || actual > max {
        return Err(DecodeError::invalid(
            what,
            format!("offset {offset}, {actual} of {max} elements"),
        ));
    }
    if (actual as usize).saturating_mul(min_size) > r.remaining() {
        return Err(DecodeError::invalid(
            what,
            format!("{actual} elements cannot fit in {} bytes", r.remaining()),
        ));
    }
    Ok(actual as usize)
}

/// A `twr_t` referent: conformance, length, octets.
fn read_twr<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let max = r.u32("tower")?;
    let len = r.u32("tower")?;
    if len > max {
        return Err(DecodeError::invalid(
            "tower",
            format!("length {len} above its size {max}"),
        ));
    }
    r.bytes(len as usize, "tower octets")
}

pub fn decode_lookup_response(stub: &[u8]) -> Result<LookupResponse, DecodeError> {
    let mut r = Reader::new(stub);
    let handle = read_handle(&mut r)?;
    let _num_ents = r.u32("num_ents")?;
    // object (16) + tower pointer (4) + annotation offset/length (8).
    let n = read_cv_header(&mut r, "entries", 28)?;
    let mut raw = Vec::with_capacity(n);
    for _ in 0..n {
        let object = r.uuid("entry object")?;
        let tower_ref = r.u32("entry tower pointer")?;
        let ann_offset = r.u32("annotation")?;
        let ann_len = r.u32("annotation")?;
        if ann_offset != 0 || ann_len > 64 {
            return Err(DecodeError::invalid(
                "annotation",
                format!("offset {ann_offset}, length {ann_len} (max 64)"),
            ));
        }
        let ann = r.bytes(ann_len as usize, "annotation")?;
        let annotation =
            String::from_utf8_lossy(ann.split(|b| *b == 0).next().unwrap_or(&[])).into_owned();
        raw.push((object, tower_ref, annotation));
    }
    let mut entries = Vec::with_capacity(n);
    for (object, tower_ref, annotation) in raw {
        let tower = if tower_ref == 0 {
            None
        } else {
            Some(Tower::decode(read_twr(&mut r)?))
        };
        entries.push(Entry {
            object,
            tower,
            annotation,
        });
    }
    let status = r.u32("status")?;
    Ok(LookupResponse {
        handle,
        entries,
        status,
    })
}

/// `ept_map` request: the tower to map, under `object` (nil when none).
pub fn encode_map_request(
    object: &Uuid,
    tower: &Tower,
    handle: &ContextHandle,
    max_towers: u32,
) -> Vec<u8> {
    let octets = tower.encode();
    let mut w = Writer::new();
    w.u32(1);
    w.uuid(object);
    w.u32(2);
    w.u32(octets.len() as u32);
    w.u32(octets.len() as u32);
    w.bytes(&octets);
    w.align(4);
    w.bytes(handle);
    w.u32(max_towers);
    w.into_inner()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapResponse {
    pub handle: ContextHandle,
    pub towers: Vec<Result<Tower, DecodeError>>,
    pub status: u32,
}

pub fn decode_map_response(stub: &[u8]) -> Result<MapResponse, DecodeError> {
    let mut r = Reader::new(stub);
    let handle = read_handle(&mut r)?;
    let _num = r.u32("num_towers")?;
    let n = read_cv_header(&mut r, "towers", 4)?;
    let mut refs = Vec::with_capacity(n);
    for _ in 0..n {
        refs.push(r.u32("tower pointer")?);
    }
    let mut towers = Vec::with_capacity(n);
    for p in refs {
        if p != 0 {
            towers.push(Tower::decode(read_twr(&mut r)?));
        }
    }
    let status = r.u32("status")?;
    Ok(MapResponse {
        handle,
        towers,
        status,
    })
}

/// Server-side encoders for tests, the scripted test peer and fuzz seeds.
pub mod build {
    use super::*;

    pub fn lookup_response(
        handle: &ContextHandle,
        entries: &[(Uuid, Option<Tower>, &str)],
        status: u32,
    ) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(handle);
        w.u32(entries.len() as u32);
        w.u32(MAX_ENTS.max(entries.len() as u32));
        w.u32(0);
        w.u32(entries.len() as u32);
        for (i, (object, tower, annotation)) in entries.iter().enumerate() {
            w.uuid(object);
            w.u32(if tower.is_some() { 3 + i as u32 } else { 0 });
            let mut ann = annotation.as_bytes().to_vec();
            ann.truncate(63);
            ann.push(0);
            w.u32(0);
            w.u32(ann.len() as u32);
            w.bytes(&ann);
        }
        for (_, tower, _) in entries {
            if let Some(t) = tower {
                let o = t.encode();
                w.u32(o.len() as u32);
                w.u32(o.len() as u32);
                w.bytes(&o);
            }
        }
        w.u32(status);
        w.into_inner()
    }

    pub fn map_response(handle: &ContextHandle, towers: &[Tower], status: u32) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(handle);
        w.u32(towers.len() as u32);
        w.u32(4.max(towers.len() as u32));
        w.u32(0);
        w.u32(towers.len() as u32);
        for i in 0..towers.len() {
            w.u32(3 + i as u32);
        }
        for t in towers {
            let o = t.encode();
            w.u32(o.len() as u32);
            w.u32(o.len() as u32);
            w.bytes(&o);
        }
        w.u32(status);
        w.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcerpc::{IXNREMOTE, NDR_SYNTAX};

    fn lsarpc() -> SyntaxId {
        SyntaxId::parse("12345778-1234-abcd-ef00-0123456789ab/v0.0", (0, 0)).unwrap()
    }

    #[test]
    fn tcp_tower_round_trip_and_binding() {
        let t = Tower::tcp(&lsarpc(), Ipv4Addr::new(198, 18, 0, 2), 49153);
        let bytes = t.encode();
        // 5 floors: 2 + 25 + 25 + 7 + 7 + 9 octets.
        assert_eq!(bytes.len(), 75);
        let back = Tower::decode(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.interface(), Some(lsarpc()));
        assert_eq!(back.floors[1].syntax(), Some(NDR_SYNTAX));
        assert_eq!(back.protseq(), "ncacn_ip_tcp");
        assert_eq!(
            back.tcp_endpoint(),
            Some((Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2))), 49153))
        );
        assert_eq!(back.binding(), "ncacn_ip_tcp:198.18.0.2[49153]");
    }

    #[test]
    fn ipv6_address_floor() {
        let v6: Ipv6Addr = "2001:db8::5".parse().unwrap();
        let t = Tower::tcp_at(&lsarpc(), IpAddr::V6(v6), 49153);
        let bytes = t.encode();
        // The address floor grows from 4 to 16 octets.
        assert_eq!(bytes.len(), 75 + 12);
        assert_eq!(&bytes[bytes.len() - 16..], &v6.octets());
        let back = Tower::decode(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.tcp_endpoint(), Some((Some(IpAddr::V6(v6)), 49153)));
        assert_eq!(back.binding(), "ncacn_ip_tcp:[2001:db8::5][49153]");
        // A 16-octet floor written by hand (as a mapper would) decodes the same.
        let f = |p: u8, rhs: &[u8]| Floor {
            lhs: vec![p],
            rhs: rhs.to_vec(),
        };
        let mut by_hand = tower_with(vec![
            f(PROTO_TCP, &[0x13, 0x88]),
            f(PROTO_IP, &Ipv6Addr::LOCALHOST.octets()),
        ]);
        assert_eq!(
            by_hand.tcp_endpoint(),
            Some((Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), 5000))
        );
        assert_eq!(by_hand.binding(), "ncacn_ip_tcp:[::1][5000]");
        // An address of any other length is no address: the port still counts.
        by_hand.floors[4].rhs = vec![1, 2, 3, 4, 5, 6];
        assert_eq!(by_hand.tcp_endpoint(), Some((None, 5000)));
        assert_eq!(by_hand.binding(), "ncacn_ip_tcp:?[5000]");
    }

    fn tower_with(transport: Vec<Floor>) -> Tower {
        let mut t = Tower::tcp(&IXNREMOTE, Ipv4Addr::UNSPECIFIED, 0);
        t.floors.truncate(3);
        t.floors.extend(transport);
        t
    }

    #[test]
    fn bindings_of_other_protocols() {
        let f = |p: u8, rhs: &[u8]| Floor {
            lhs: vec![p],
            rhs: rhs.to_vec(),
        };
        let rows = [
            (
                vec![f(PROTO_LRPC, b"OLE7F3A\0")],
                "ncalrpc:[OLE7F3A]",
                "ncalrpc",
                None,
            ),
            (
                vec![
                    f(PROTO_NAMED_PIPE, b"\\pipe\\lsass\0"),
                    f(PROTO_NETBIOS, b"\\\\SQL01\0"),
                ],
                "ncacn_np:\\\\SQL01[\\pipe\\lsass]",
                "ncacn_np",
                None,
            ),
            (
                vec![f(PROTO_HTTP, &[2, 81]), f(PROTO_IP, &[10, 0, 0, 1])],
                "ncacn_http:10.0.0.1[593]",
                "ncacn_http",
                None,
            ),
            (
                vec![f(PROTO_UDP, &[0, 135]), f(PROTO_IP, &[10, 0, 0, 1])],
                "ncadg_ip_udp:10.0.0.1[135]",
                "ncadg_ip_udp",
                None,
            ),
            (
                vec![f(PROTO_TCP, &[0xc0, 0x01]), f(PROTO_IP, &[0, 0, 0, 0])],
                "ncacn_ip_tcp:0.0.0.0[49153]",
                "ncacn_ip_tcp",
                Some(49153),
            ),
            (
                vec![f(0x42, &[])],
                "unknown_proto_0x42:[0]",
                "unknown",
                None,
            ),
            (vec![], "", "unknown", None),
        ];
        for (floors, binding, protseq, port) in rows {
            let t = tower_with(floors);
            assert_eq!(t.binding(), binding);
            assert_eq!(t.protseq(), protseq);
            assert_eq!(t.tcp_endpoint().map(|e| e.1), port);
        }
    }

    #[test]
    fn bad_towers_are_errors() {
        for bytes in [
            &[][..],
            &[5, 0],
            &[1, 0, 1, 0],
            &[0xff, 0xff, 0, 0, 0, 0],
            &[1, 0, 0, 0, 9, 0, 1],
        ] {
            assert!(Tower::decode(bytes).is_err(), "{bytes:?}");
        }
        assert_eq!(Tower::decode(&[0, 0]).unwrap().floors.len(), 0);
    }

    #[test]
    fn lookup_request_layout() {
        let req = LookupRequest::by_interface(IXNREMOTE, [0; 20]);
        let b = req.encode();
        // inquiry, ptr(null), ptr, uuid, major, minor, vers_option, handle, max_ents
        assert_eq!(b.len(), 4 + 4 + 4 + 16 + 2 + 2 + 4 + 20 + 4);
        assert_eq!(&b[0..4], &[1, 0, 0, 0]);
        assert_eq!(&b[12..16], &[0xe0, 0x0c, 0x6b, 0x90]);
        assert_eq!(
            LookupRequest::all([0; 20]).encode().len(),
            4 + 4 + 4 + 4 + 20 + 4
        );
    }

    #[test]
    fn lookup_response_round_trip() {
        let cid = Uuid::parse("5d7f1c2a-0000-4a1b-8c3d-001122334455").unwrap();
        let tcp = Tower::tcp(&IXNREMOTE, Ipv4Addr::new(10, 1, 2, 3), 5000);
        let lrpc = tower_with(vec![Floor {
            lhs: vec![PROTO_LRPC],
            rhs: b"OLE1\0".to_vec(),
        }]);
        let stub = build::lookup_response(
            &[9; 20],
            &[
                (cid, Some(tcp.clone()), "MSDTC"),
                (Uuid::NIL, None, ""),
                (cid, Some(lrpc.clone()), "x"),
            ],
            0,
        );
        let r = decode_lookup_response(&stub).unwrap();
        assert_eq!(r.handle, [9; 20]);
        assert_eq!(r.status, 0);
        assert_eq!(r.entries.len(), 3);
        assert_eq!(
            r.entries[0],
            Entry {
                object: cid,
                tower: Some(Ok(tcp)),
                annotation: "MSDTC".into()
            }
        );
        assert_eq!(r.entries[1].tower, None);
        assert_eq!(r.entries[2].tower, Some(Ok(lrpc)));
        // Every truncation is an error, never a panic.
        for cut in 0..stub.len() {
            assert!(
                decode_lookup_response(&stub[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn lookup_response_with_lying_counts() {
        let mut stub = build::lookup_response(&[0; 20], &[], EPT_S_NOT_REGISTERED);
        assert_eq!(
            decode_lookup_response(&stub).unwrap().status,
            EPT_S_NOT_REGISTERED
        );
        // actual_count (offset 32) claims a billion entries.
        stub[32..36].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        assert!(decode_lookup_response(&stub).is_err());
    }

    #[test]
    fn map_round_trip() {
        let t = Tower::tcp(&IXNREMOTE, Ipv4Addr::new(10, 1, 2, 3), 5000);
        let req = encode_map_request(&Uuid::NIL, &t, &[0; 20], 4);
        assert_eq!(req.len(), 4 + 16 + 4 + 4 + 4 + 75 + 1 + 20 + 4);
        let stub = build::map_response(&[0; 20], &[t.clone(), t.clone()], 0);
        let r = decode_map_response(&stub).unwrap();
        assert_eq!(r.towers, vec![Ok(t.clone()), Ok(t)]);
        for cut in 0..stub.len() {
            assert!(decode_map_response(&stub[..cut]).is_err(), "cut at {cut}");
        }
        let none =
            decode_map_response(&build::map_response(&[0; 20], &[], EPT_S_NOT_REGISTERED)).unwrap();
        assert_eq!((none.towers.len(), none.status), (0, EPT_S_NOT_REGISTERED));
    }
}
