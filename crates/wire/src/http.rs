//! The HTTP/1.1 a CRL download and an OCSP request need (hop `revocation`): one request with
//! `Connection: close`, and the status line and body of the answer. Not a general HTTP client:
//! no chunked uploads, redirects or keep-alive; a chunked answer is de-chunked.

/// A GET (`body` `None`) or a POST of `body` with `content_type`, for `path` (with its query)
/// on `host` (as the Host header gives it: with a port when not the scheme's default).
pub fn encode_request(host: &str, path: &str, post: Option<(&str, &[u8])>) -> Vec<u8> {
    let method = if post.is_some() { "POST" } else { "GET" };
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dtcprobe\r\nAccept: */*\r\nConnection: close\r\n"
    )
    .into_bytes();
    match post {
        Some((content_type, body)) => {
            out.extend(
                format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .bytes(),
            );
            out.extend_from_slice(body);
        }
        None => out.extend_from_slice(b"\r\n"),
    }
    out
}

/// The parts of an answer hop `revocation` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("the answer is not HTTP")]
    NotHttp,
    #[error("the answer ends inside its header")]
    Truncated,
    #[error("a malformed chunked body")]
    BadChunk,
}

/// Whether `bytes` hold a whole answer before the server closes the connection: the header and
/// as many body bytes as its Content-Length says, or a chunked body's last chunk. (Some
/// responders, `openssl ocsp` among them, keep the connection open after answering.)
pub fn is_complete(bytes: &[u8]) -> bool {
    match parse_response(bytes) {
        Err(_) => false,
        Ok(_) => {
            let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
            let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
            head.contains("\ncontent-length:")
                || (head.contains("chunked") && bytes.ends_with(b"0\r\n\r\n"))
        }
    }
}

/// Parses a whole answer (read until the server closed the connection, or [`is_complete`]).
pub fn parse_response(bytes: &[u8]) -> Result<Response, HttpError> {
    let end =
        bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or(if bytes.starts_with(b"HTTP/") {
                HttpError::Truncated
            } else {
                HttpError::NotHttp
            })?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| HttpError::NotHttp)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(HttpError::NotHttp)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::NotHttp);
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::NotHttp)?;
    let mut content_type = None;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(value.to_string()),
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let rest = &bytes[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(n) => rest.get(..n).ok_or(HttpError::Truncated)?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok(Response {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    // Bounded by the input: every turn consumes at least the size line.
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(HttpError::BadChunk)?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| HttpError::BadChunk)?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| HttpError::BadChunk)?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or(HttpError::BadChunk)?);
        rest = rest.get(size + 2..).ok_or(HttpError::BadChunk)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let get = encode_request("ca.example", "/ca.crl", None);
        assert!(get.starts_with(b"GET /ca.crl HTTP/1.1\r\nHost: ca.example\r\n"));
        assert!(get.ends_with(b"\r\n\r\n"));
        let post = encode_request(
            "ocsp.example:8080",
            "/",
            Some(("application/ocsp-request", b"\x30\x00")),
        );
        let text = String::from_utf8_lossy(&post);
        assert!(text.starts_with("POST / HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("Content-Length: 2\r\n\r\n"), "{text}");
        assert!(post.ends_with(b"\x30\x00"));
    }

    #[test]
    fn responses() {
        let r = parse_response(
            b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 3\r\n\r\nabcdef",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type.as_deref(), Some("application/ocsp-response"));
        assert_eq!(r.body, b"abc");
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, &r.body[..]), (404, &b"nope"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        assert_eq!(
            parse_response(b"SSH-2.0-OpenSSH\r\n"),
            Err(HttpError::NotHttp)
        );
        assert!(is_complete(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nab"
        ));
        assert!(!is_complete(
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nab"
        ));
        assert!(!is_complete(b"HTTP/1.0 200 OK\r\n\r\nab"));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nX: y"),
            Err(HttpError::Truncated)
        );
    }
}
