//! SQL Server Resolution Protocol (MS-SQLR): the SQL Server Browser (UDP 1434) tells which TCP
//! port a named instance listens on. Only the two messages a unicast instance lookup needs:
//! CLNT_UCAST_INST (the question) and SVR_RESP (the answer), each with an encoder and a decoder,
//! so the tool (which asks) and the test Browser (which answers) speak through the same code.

use thiserror::Error;

/// The Browser's UDP port.
pub const BROWSER_PORT: u16 = 1434;

/// CLNT_UCAST_INST: "tell me about this instance".
pub const CLNT_UCAST_INST: u8 = 0x04;
/// SVR_RESP.
pub const SVR_RESP: u8 = 0x05;
/// MS-SQLR limits instance names to 32 bytes.
pub const MAX_INSTANCE_NAME: usize = 32;

/// One instance as the Browser describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceInfo {
    pub server_name: String,
    pub instance_name: String,
    pub is_clustered: bool,
    pub version: String,
    pub tcp_port: Option<u16>,
    pub named_pipe: Option<String>,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SsrpError {
    #[error("instance name `{0}` is not valid for the SQL Server Browser (1-32 ASCII characters)")]
    BadInstanceName(String),
    #[error("the answer is not an SSRP response (first byte 0x{0:02X})")]
    NotResponse(u8),
    #[error("the datagram is not a CLNT_UCAST_INST request")]
    NotRequest,
    #[error("the answer is truncated")]
    Truncated,
    #[error("the answer lists no instance")]
    Empty,
}

fn valid_instance_name(instance: &str) -> bool {
    !instance.is_empty()
        && instance.len() <= MAX_INSTANCE_NAME
        && instance.is_ascii()
        && !instance.contains('\0')
}

/// The CLNT_UCAST_INST request for `instance`.
pub fn encode_request(instance: &str) -> Result<Vec<u8>, SsrpError> {
    if !valid_instance_name(instance) {
        return Err(SsrpError::BadInstanceName(instance.to_string()));
    }
    let mut v = Vec::with_capacity(instance.len() + 2);
    v.push(CLNT_UCAST_INST);
    v.extend_from_slice(instance.as_bytes());
    v.push(0);
    Ok(v)
}

/// The instance name a CLNT_UCAST_INST request asks about (the Browser's side). The name is
/// NUL-terminated on the wire; a missing terminator is tolerated, as the real Browser does.
pub fn decode_request(datagram: &[u8]) -> Result<String, SsrpError> {
    let (&first, rest) = datagram.split_first().ok_or(SsrpError::NotRequest)?;
    if first != CLNT_UCAST_INST {
        return Err(SsrpError::NotRequest);
    }
    let name = rest.split(|&b| b == 0).next().unwrap_or_default();
    let name = String::from_utf8_lossy(name).into_owned();
    if !valid_instance_name(&name) {
        return Err(SsrpError::BadInstanceName(name));
    }
    Ok(name)
}

/// Parses an SVR_RESP datagram into the instances it lists.
pub fn parse_response(datagram: &[u8]) -> Result<Vec<InstanceInfo>, SsrpError> {
    let (&first, rest) = datagram.split_first().ok_or(SsrpError::Truncated)?;
    if first != SVR_RESP {
        return Err(SsrpError::NotResponse(first));
    }
    if rest.len() < 2 {
        return Err(SsrpError::Truncated);
    }
    let size = u16::from_le_bytes([rest[0], rest[1]]) as usize;
    let data = rest.get(2..2 + size).ok_or(SsrpError::Truncated)?;
    // The data is "MBCS" text; in practice ASCII. Decode lossily to be tolerant of odd names.
    let text = String::from_utf8_lossy(data);
    // Key;value pairs, positionally (a value may be empty); an empty key ends a record, and
    // `ServerName` starts a new one.
    let tokens: Vec<&str> = text.trim_matches('\0').split(';').collect();
    let mut out = Vec::new();
    let mut cur: Option<InstanceInfo> = None;
    let push = |info: InstanceInfo, out: &mut Vec<InstanceInfo>| {
        if !info.instance_name.is_empty() || !info.server_name.is_empty() {
            out.push(info);
        }
    };
    let mut i = 0;
    while i < tokens.len() {
        let k = tokens[i];
        if k.is_empty() {
            if let Some(c) = cur.take() {
                push(c, &mut out);
            }
            i += 1;
            continue;
        }
        let v = tokens.get(i + 1).copied().unwrap_or("");
        if k.eq_ignore_ascii_case("servername") {
            if let Some(c) = cur.take() {
                push(c, &mut out);
            }
        }
        let info = cur.get_or_insert_with(InstanceInfo::default);
        match k.to_ascii_lowercase().as_str() {
            "servername" => info.server_name = v.to_string(),
            "instancename" => info.instance_name = v.to_string(),
            "isclustered" => info.is_clustered = v.eq_ignore_ascii_case("yes"),
            "version" => info.version = v.to_string(),
            "tcp" => info.tcp_port = v.parse().ok().filter(|p| *p != 0),
            "np" => info.named_pipe = Some(v.to_string()),
            _ => {}
        }
        i += 2;
    }
    if let Some(c) = cur.take() {
        push(c, &mut out);
    }
    if out.is_empty() {
        return Err(SsrpError::Empty);
    }
    Ok(out)
}

/// The entry for `instance` (case-insensitive) among the Browser's answer.
pub fn find_instance<'a>(
    instances: &'a [InstanceInfo],
    instance: &str,
) -> Option<&'a InstanceInfo> {
    instances
        .iter()
        .find(|i| i.instance_name.eq_ignore_ascii_case(instance))
}

/// Builds an SVR_RESP datagram (the Browser's side: the test peer's Browser, and tests).
pub fn encode_response(instances: &[InstanceInfo]) -> Vec<u8> {
    let mut text = String::new();
    for i in instances {
        text.push_str(&format!(
            "ServerName;{};InstanceName;{};IsClustered;{};Version;{};",
            i.server_name,
            i.instance_name,
            if i.is_clustered { "Yes" } else { "No" },
            i.version
        ));
        if let Some(p) = i.tcp_port {
            text.push_str(&format!("tcp;{p};"));
        }
        if let Some(np) = &i.named_pipe {
            text.push_str(&format!("np;{np};"));
        }
        text.push(';');
    }
    let mut v = vec![SVR_RESP];
    v.extend_from_slice(&(text.len() as u16).to_le_bytes());
    v.extend_from_slice(text.as_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encoding() {
        assert_eq!(
            encode_request("SQLEXPRESS").unwrap(),
            b"\x04SQLEXPRESS\x00".to_vec()
        );
        for bad in ["", "a\0b", "ÄÖ", &"x".repeat(33)] {
            assert!(encode_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_decoding() {
        let cases: &[(&[u8], Result<&str, SsrpError>)] = &[
            (b"\x04SQLEXPRESS\x00", Ok("SQLEXPRESS")),
            (b"\x04INST", Ok("INST")),
            (b"\x04INST\x00trailing", Ok("INST")),
            (b"\x04\x00", Err(SsrpError::BadInstanceName(String::new()))),
            (b"\x03INST\x00", Err(SsrpError::NotRequest)),
            (b"", Err(SsrpError::NotRequest)),
        ];
        for (datagram, want) in cases {
            assert_eq!(
                decode_request(datagram),
                want.clone().map(str::to_string),
                "{datagram:?}"
            );
        }
        let name = "x".repeat(MAX_INSTANCE_NAME);
        assert_eq!(decode_request(&encode_request(&name).unwrap()), Ok(name));
    }

    #[test]
    fn parses_real_shaped_answers() {
        let text = "ServerName;SQL01;InstanceName;SQLEXPRESS;IsClustered;No;Version;15.0.2000.5;tcp;49172;np;\\\\SQL01\\pipe\\MSSQL$SQLEXPRESS\\sql\\query;;";
        let mut d = vec![0x05];
        d.extend_from_slice(&(text.len() as u16).to_le_bytes());
        d.extend_from_slice(text.as_bytes());
        let v = parse_response(&d).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].server_name, "SQL01");
        assert_eq!(v[0].tcp_port, Some(49172));
        assert_eq!(v[0].version, "15.0.2000.5");
        assert!(v[0].named_pipe.as_deref().unwrap().contains("pipe"));
        assert!(find_instance(&v, "sqlexpress").is_some());
        assert!(find_instance(&v, "OTHER").is_none());
    }

    #[test]
    fn instance_without_tcp_and_several_instances() {
        let infos = vec![
            InstanceInfo {
                server_name: "S".into(),
                instance_name: "A".into(),
                version: "16.0.1000.6".into(),
                tcp_port: None,
                named_pipe: Some("\\\\S\\pipe\\sql\\query".into()),
                ..Default::default()
            },
            InstanceInfo {
                server_name: "S".into(),
                instance_name: "B".into(),
                version: "16.0.1000.6".into(),
                tcp_port: Some(50001),
                ..Default::default()
            },
        ];
        let parsed = parse_response(&encode_response(&infos)).unwrap();
        assert_eq!(parsed, infos);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_response(&[]), Err(SsrpError::Truncated));
        assert_eq!(parse_response(&[0x05, 0x10]), Err(SsrpError::Truncated));
        assert_eq!(
            parse_response(&[0x05, 0x10, 0x00, b'a']),
            Err(SsrpError::Truncated)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1"),
            Err(SsrpError::NotResponse(b'H'))
        );
        assert_eq!(
            parse_response(&[0x05, 0x02, 0x00, b';', b';']),
            Err(SsrpError::Empty)
        );
    }
}
