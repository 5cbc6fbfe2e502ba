//! A lean HTTP/1.1 client for the load generator: one keep-alive connection per virtual user,
//! requests written in one `write`, responses parsed in place (status, the headers a browser
//! acts on, a `Content-Length` or chunked body).
//!
//! Why not reqwest: the generator shares the two cores with the server, and reqwest spent about
//! as much CPU per flow as a quarter of the server (URL parsing and IDNA per request, header
//! maps, pools). What a browser does that matters here is all kept: cookies it is given, the
//! `Origin` of a form post, redirects read from `Location`, `Accept-Encoding: gzip, br` on every
//! request (so the server compresses its pages as it does for browsers), the body decoded and
//! checked.
//!
//! Decoding: the server compresses with actix's `compress-gzip` feature only (gzip or deflate,
//! never `br`), so gzip and deflate are decoded; any other `Content-Encoding` is counted as a
//! transport error rather than passed over unread.

use std::io::Read;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One parsed response.
pub struct Response {
    pub status: u16,
    /// `Set-Cookie` values (`name=value`, attributes dropped).
    pub cookies: Vec<(String, String)>,
    pub location: Option<String>,
    /// `Retry-After` in seconds, on a 429 or 503.
    pub retry_after: Option<u64>,
    /// The body, decoded if it came compressed.
    pub body: Vec<u8>,
}

impl Response {
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("")
    }
}

/// Why a request failed, as counted in the benchmark's errors.
#[derive(Debug)]
pub enum Failure {
    Connect,
    Timeout,
    /// The connection broke or the answer was not HTTP/1.1 as expected.
    Transport(&'static str),
}

impl Failure {
    pub fn kind(&self) -> String {
        match self {
            Failure::Connect => "connect".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Transport(what) => format!("http_transport:{what}"),
        }
    }
}

/// Bytes a client has received, counted as they arrive.
#[derive(Clone, Copy, Default, Debug)]
pub struct Traffic {
    /// Bytes read from the socket: status lines, headers and (compressed) bodies.
    pub wire: u64,
    /// Response bodies after decoding.
    pub decoded: u64,
    /// Responses that came with a `Content-Encoding`.
    pub compressed: u64,
}

impl std::ops::Sub for Traffic {
    type Output = Traffic;
    fn sub(self, rhs: Traffic) -> Traffic {
        Traffic {
            wire: self.wire - rhs.wire,
            decoded: self.decoded - rhs.decoded,
            compressed: self.compressed - rhs.compressed,
        }
    }
}

/// A keep-alive connection to one server, reopened when the server closes it.
pub struct Client {
    addr: String,
    host_header: String,
    origin: String,
    timeout: Duration,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// The `Accept-Encoding` header line sent with every request (empty: none).
    accept_encoding: Vec<u8>,
    pub traffic: Traffic,
}

/// What a browser asks for.
pub const BROWSER_ACCEPT_ENCODING: &str = "gzip, br";

impl Client {
    /// `base` is `http://host:port`.
    pub fn new(base: &str, timeout: Duration) -> Self {
        let authority = base.trim_start_matches("http://").trim_end_matches('/');
        Self {
            addr: authority.to_string(),
            host_header: authority.to_string(),
            origin: base.trim_end_matches('/').to_string(),
            timeout,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            out: Vec::with_capacity(1024),
            accept_encoding: format!("Accept-Encoding: {BROWSER_ACCEPT_ENCODING}\r\n").into_bytes(),
            traffic: Traffic::default(),
        }
    }

    /// The origin requests are made to (and form posts come from).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Another `Accept-Encoding` than a browser's; empty sends none (uncompressed answers).
    pub fn with_accept_encoding(mut self, value: &str) -> Self {
        self.accept_encoding = if value.is_empty() {
            Vec::new()
        } else {
            format!("Accept-Encoding: {value}\r\n").into_bytes()
        };
        self
    }

    pub async fn get(&mut self, path: &str, cookies: &[(&str, &str)]) -> Result<Response, Failure> {
        self.out.clear();
        self.head("GET", path, cookies);
        self.out.extend_from_slice(b"\r\n");
        self.send().await
    }

    /// A form post as a browser sends it: urlencoded, with the page's `Origin`.
    pub async fn post_form(
        &mut self,
        path: &str,
        cookies: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> Result<Response, Failure> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.out.clear();
        self.head("POST", path, cookies);
        self.out.extend_from_slice(b"Origin: ");
        self.out.extend_from_slice(self.origin.as_bytes());
        self.out
            .extend_from_slice(b"\r\nContent-Type: application/x-www-form-urlencoded\r\n");
        self.out
            .extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        self.out.extend_from_slice(body.as_bytes());
        self.send().await
    }

    /// A request as an app's server sends it: extra headers (`Authorization`), a body of
    /// `content_type` if any, no `Origin`.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        cookies: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Result<Response, Failure> {
        self.out.clear();
        self.head(method, path, cookies);
        for (k, v) in headers {
            self.out
                .extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        match body {
            Some((content_type, body)) => {
                self.out.extend_from_slice(
                    format!(
                        "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                self.out.extend_from_slice(body);
            }
            None => self.out.extend_from_slice(b"\r\n"),
        }
        self.send().await
    }

    fn head(&mut self, method: &str, path: &str, cookies: &[(&str, &str)]) {
        let out = &mut self.out;
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.host_header.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.accept_encoding);
        if !cookies.is_empty() {
            out.extend_from_slice(b"Cookie: ");
            for (i, (k, v)) in cookies.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b"; ");
                }
                out.extend_from_slice(k.as_bytes());
                out.push(b'=');
                out.extend_from_slice(v.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    async fn send(&mut self) -> Result<Response, Failure> {
        match tokio::time::timeout(self.timeout, self.exchange()).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(Failure::Timeout)
            }
        }
    }

    async fn exchange(&mut self) -> Result<Response, Failure> {
        // A kept-alive connection the server closed in the meantime is reopened once.
        let reused = self.stream.is_some();
        match self.try_exchange().await {
            Err(Failure::Transport("closed")) if reused => {
                self.stream = None;
                self.try_exchange().await
            }
            other => other,
        }
    }

    async fn try_exchange(&mut self) -> Result<Response, Failure> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)
                .await
                .map_err(|_| Failure::Connect)?;
            s.set_nodelay(true).map_err(|_| Failure::Connect)?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().expect("connected");
        stream
            .write_all(&self.out)
            .await
            .map_err(|_| Failure::Transport("closed"))?;
        let (response, keep_alive) =
            read_response(stream, &mut self.buf, &mut self.traffic).await?;
        if !keep_alive {
            self.stream = None;
        }
        Ok(response)
    }
}

/// Reads more bytes into `buf`, counting them; an orderly close before a full response is
/// "closed".
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, wire: &mut u64) -> Result<(), Failure> {
    buf.reserve(8 * 1024);
    let n = stream
        .read_buf(buf)
        .await
        .map_err(|_| Failure::Transport("closed"))?;
    if n == 0 {
        return Err(Failure::Transport("closed"));
    }
    *wire += n as u64;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
    /// Anything this client did not ask for or cannot decode (`br` included: see the module doc).
    Other,
}

fn decode(encoding: Encoding, body: Vec<u8>) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::with_capacity(body.len() * 4);
    let read = match encoding {
        Encoding::Identity => return Ok(body),
        Encoding::Gzip => flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out),
        // HTTP's "deflate" is the zlib format.
        Encoding::Deflate => flate2::read::ZlibDecoder::new(&body[..]).read_to_end(&mut out),
        Encoding::Other => return Err(Failure::Transport("content_encoding")),
    };
    read.map_err(|_| Failure::Transport("decode"))?;
    Ok(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    traffic: &mut Traffic,
) -> Result<(Response, bool), Failure> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf, &mut traffic.wire).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| Failure::Transport("head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or(Failure::Transport("status"))?;
    let (mut length, mut chunked, mut keep_alive) = (None, false, true);
    let mut encoding = Encoding::Identity;
    let (mut cookies, mut location, mut retry_after) = (Vec::new(), None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("content-encoding") {
            encoding = match value.to_ascii_lowercase().as_str() {
                "identity" | "" => Encoding::Identity,
                "gzip" | "x-gzip" => Encoding::Gzip,
                "deflate" => Encoding::Deflate,
                _ => Encoding::Other,
            };
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("set-cookie") {
            if let Some((k, v)) = value.split(';').next().and_then(|p| p.split_once('=')) {
                cookies.push((k.trim().to_string(), v.to_string()));
            }
        } else if name.eq_ignore_ascii_case("location") {
            location = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse().ok();
        }
    }
    buf.drain(..head_end);
    let body = if chunked {
        read_chunked(stream, buf, &mut traffic.wire).await?
    } else {
        let len = length.unwrap_or(0);
        while buf.len() < len {
            fill(stream, buf, &mut traffic.wire).await?;
        }
        buf.drain(..len).collect()
    };
    if encoding != Encoding::Identity {
        traffic.compressed += 1;
    }
    let body = decode(encoding, body)?;
    traffic.decoded += body.len() as u64;
    Ok((
        Response {
            status,
            cookies,
            location,
            retry_after,
            body,
        },
        keep_alive,
    ))
}

async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    wire: &mut u64,
) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            fill(stream, buf, wire).await?;
        };
        let size_text =
            std::str::from_utf8(&buf[..line_end]).map_err(|_| Failure::Transport("chunk"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| Failure::Transport("chunk"))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                if let Some(i) = find(buf, b"\r\n") {
                    buf.drain(..i + 2);
                    if i == 0 {
                        return Ok(body);
                    }
                    continue;
                }
                fill(stream, buf, wire).await?;
            }
        }
        while buf.len() < size + 2 {
            fill(stream, buf, wire).await?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}
