//! Origins and validated `redirect_url` targets.

use std::fmt;

use percent_encoding::percent_decode_str;
use url::Url;

/// A web origin: scheme, host and port, exactly (RFC 6454).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `https://app.example.com` (a trailing `/` is allowed; no path, query or credentials).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let url = Url::parse(s.trim())
            .map_err(|e| anyhow::anyhow!("not an origin like https://app.example.com: {e}"))?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            anyhow::bail!("an origin has no path, query or fragment");
        }
        Self::from_url(&url)
    }

    pub fn from_url(url: &Url) -> anyhow::Result<Self> {
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("scheme must be http or https");
        }
        if !url.username().is_empty() || url.password().is_some() {
            anyhow::bail!("an origin has no credentials");
        }
        let host = url.host_str().ok_or_else(|| anyhow::anyhow!("no host"))?;
        if host.contains('*') {
            anyhow::bail!("a host has no `*` (a wildcard is written https://*.example.com)");
        }
        Ok(Self {
            scheme: url.scheme().to_string(),
            host: host.to_ascii_lowercase(),
            port: url
                .port_or_known_default()
                .ok_or_else(|| anyhow::anyhow!("no port"))?,
        })
    }

    /// Whether the value of an `Origin` header names this origin.
    pub fn matches_header(&self, header: &str) -> bool {
        Url::parse(header)
            .ok()
            .and_then(|u| Origin::from_url(&u).ok())
            .is_some_and(|o| &o == self)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = match self.scheme.as_str() {
            "https" => 443,
            _ => 80,
        };
        if self.port == default {
            write!(f, "{}://{}", self.scheme, self.host)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// An entry of `allowed_redirect_origins`: one origin exactly, or every subdomain of a domain
/// (`https://*.example.com`: `https://app.example.com` and `https://a.b.example.com`, with the
/// same scheme and port; never `https://example.com` itself, `https://evilexample.com` or
/// `https://example.com.evil.test`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigin {
    Exact(Origin),
    Subdomains {
        scheme: String,
        /// Lowercase, in punycode, at least two labels (`*.com` is refused).
        domain: String,
        port: u16,
    },
}

impl AllowedOrigin {
    /// Parses `https://app.example.com` or `https://*.example.com[:port]`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Self::Exact(Origin::parse(s)?));
        };
        let Some(rest) = rest.strip_prefix("*.") else {
            return Ok(Self::Exact(Origin::parse(s)?));
        };
        // Parse the rest as an origin of its own: the same rules for scheme, host and port.
        let origin = Origin::parse(&format!("{scheme}://{rest}"))?;
        if origin.host.parse::<std::net::IpAddr>().is_ok() || origin.host.starts_with('[') {
            anyhow::bail!("a wildcard needs a domain name, not an IP address");
        }
        if !origin.host.contains('.') || origin.host.contains('*') {
            anyhow::bail!(
                "a wildcard covers the subdomains of a domain with at least two labels, like https://*.example.com"
            );
        }
        Ok(Self::Subdomains {
            scheme: origin.scheme,
            domain: origin.host,
            port: origin.port,
        })
    }

    /// Whether `origin` is allowed by this entry.
    pub fn allows(&self, origin: &Origin) -> bool {
        match self {
            Self::Exact(o) => o == origin,
            Self::Subdomains {
                scheme,
                domain,
                port,
            } => {
                origin.scheme == *scheme
                    && origin.port == *port
                    && origin.host.len() > domain.len() + 1
                    && origin.host.ends_with(domain.as_str())
                    && origin.host.as_bytes()[origin.host.len() - domain.len() - 1] == b'.'
            }
        }
    }
}

impl fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(o) => o.fmt(f),
            Self::Subdomains {
                scheme,
                domain,
                port,
            } => {
                let default = if scheme == "https" { 443 } else { 80 };
                if *port == default {
                    write!(f, "{scheme}://*.{domain}")
                } else {
                    write!(f, "{scheme}://*.{domain}:{port}")
                }
            }
        }
    }
}

/// Where to send the person after a flow completes: a path on this server or a URL on an allowed
/// origin. Built only by [`RedirectTarget::parse`], so holding one means it is safe to redirect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectTarget(String);

impl RedirectTarget {
    /// Validates a `redirect_url`. Accepted:
    /// - a relative path starting with exactly one `/` (not `//`, not `/\`, also after
    ///   percent-decoding), which stays on `public`;
    /// - an absolute `http(s)` URL without credentials whose origin is `public` or in `allowed`.
    ///
    /// Everything else (other schemes such as `javascript:`, protocol-relative URLs, backslashes,
    /// control characters, encoded variants) returns `None`.
    pub fn parse(raw: &str, public: &Url, allowed: &[AllowedOrigin]) -> Option<Self> {
        if raw.is_empty() || raw.len() > 2048 {
            return None;
        }
        let decoded = percent_decode_str(raw).decode_utf8_lossy();
        let suspicious = |s: &str| {
            s.chars()
                .any(|c| c.is_control() || c == '\\' || c.is_whitespace())
        };
        if suspicious(raw) || suspicious(&decoded) {
            return None;
        }
        if raw.starts_with('/') {
            if raw.starts_with("//") || decoded.starts_with("//") {
                return None;
            }
            let joined = public.join(raw).ok()?;
            if Origin::from_url(&joined).ok()? != Origin::from_url(public).ok()? {
                return None;
            }
            let mut path = joined.path().to_string();
            if let Some(q) = joined.query() {
                path.push('?');
                path.push_str(q);
            }
            if let Some(f) = joined.fragment() {
                path.push('#');
                path.push_str(f);
            }
            if path.starts_with("//") {
                return None;
            }
            return Some(Self(path));
        }
        let url = Url::parse(raw).ok()?;
        // `https:evil.test` parses as a URL with host `evil.test`: require the explicit `//`.
        let after_scheme = raw.get(url.scheme().len()..)?;
        if !after_scheme.starts_with("://") {
            return None;
        }
        let origin = Origin::from_url(&url).ok()?;
        let public_origin = Origin::from_url(public).ok()?;
        if origin == public_origin || allowed.iter().any(|a| a.allows(&origin)) {
            Some(Self(url.to_string()))
        } else {
            None
        }
    }

    /// Rebuilds a target read back from the store; only parsed targets are stored.
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public() -> Url {
        Url::parse("https://accounts.example.com").unwrap()
    }

    fn allowed() -> Vec<AllowedOrigin> {
        vec![AllowedOrigin::parse("https://app.example.com").unwrap()]
    }

    fn parse(s: &str) -> Option<String> {
        RedirectTarget::parse(s, &public(), &allowed()).map(|t| t.0)
    }

    #[test]
    fn relative_paths_on_this_server_are_kept() {
        assert_eq!(parse("/user").as_deref(), Some("/user"));
        assert_eq!(parse("/user?tab=1#x").as_deref(), Some("/user?tab=1#x"));
    }

    #[test]
    fn allowed_origins_are_accepted_exactly() {
        assert_eq!(
            parse("https://app.example.com/dashboard").as_deref(),
            Some("https://app.example.com/dashboard")
        );
        assert_eq!(
            parse("https://accounts.example.com/user").as_deref(),
            Some("https://accounts.example.com/user")
        );
    }

    #[test]
    fn every_known_open_redirect_form_is_refused() {
        for s in [
            "https://evil.test",
            "//evil.test",
            "///evil.test",
            "/\\evil.test",
            "\\/\\/evil.test",
            "https:evil.test",
            "https:/evil.test",
            "https://app.example.com@evil.test",
            "https://user:pw@app.example.com/",
            "https://app.example.com.evil.test",
            "https://evilexample.com",
            "http://app.example.com",
            "https://app.example.com:8443/",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,x",
            "%2F%2Fevil.test",
            "/%2F/evil.test",
            "/%2Fevil.test",
            "/%5Cevil.test",
            "/user\r\nSet-Cookie: x=y",
            "/user%0d%0aSet-Cookie:%20x=y",
            "/ /evil.test",
            " /user",
            "",
        ] {
            assert_eq!(parse(s), None, "{s:?} must be refused");
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let o = Origin::parse("https://App.Example.com/").unwrap();
        assert!(o.matches_header("https://app.example.com"));
        assert!(o.matches_header("https://app.example.com:443"));
        assert!(!o.matches_header("http://app.example.com"));
        assert!(!o.matches_header("null"));
        assert_eq!(o.to_string(), "https://app.example.com");
    }

    #[test]
    fn a_wildcard_allows_subdomains_of_its_domain_only() {
        let wild = vec![AllowedOrigin::parse("https://*.Example.com").unwrap()];
        let ok = |s: &str| RedirectTarget::parse(s, &public(), &wild).is_some();
        assert!(ok("https://app.example.com/x"));
        assert!(ok("https://a.b.example.com/"));
        assert!(ok("https://APP.example.com:443/"));
        for s in [
            "https://example.com/",
            "https://example.com.evil.test/",
            "https://evilexample.com/",
            "https://app.evilexample.com/",
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "https://app.example.com@evil.test/",
            "https://app.example.com.evil.test/",
            "//app.example.com/",
            "https:app.example.com",
        ] {
            assert!(!ok(s), "{s} must be refused");
        }
        let port = AllowedOrigin::parse("http://*.example.test:3000").unwrap();
        assert!(port.allows(&Origin::parse("http://a.example.test:3000").unwrap()));
        assert!(!port.allows(&Origin::parse("http://a.example.test").unwrap()));
        assert_eq!(port.to_string(), "http://*.example.test:3000");
        assert_eq!(wild[0].to_string(), "https://*.example.com");
    }

    #[test]
    fn a_wildcard_needs_a_real_domain() {
        for s in [
            "https://*.com",
            "https://*.127.0.0.1",
            "https://*.*.example.com",
            "https://*.example.com/path",
            "ftp://*.example.com",
            "https://*",
        ] {
            assert!(AllowedOrigin::parse(s).is_err(), "{s} must be refused");
        }
    }
}
