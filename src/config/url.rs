//! Upstream URLs and the names derived from them (cluster, authority, header-safe text).

/// A name as a header value: bytes outside printable ASCII, and `%`, become `%XX`, so a
/// model name with CR/LF or non-ASCII can never split or corrupt a header.
pub fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Visible ASCII with no spaces: safe as a header value and an Envoy cluster name.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub explicit_port: bool,
    pub path: String,
    pub query: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("\"{s}\" must start with http:// or https://"));
        };
        let (authority, path_query) = match rest.find('/') {
            Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("")),
            None => (rest, ""),
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_query, ""),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported; use api_key".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("\"{s}\": unclosed IPv6 bracket"))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("\"{s}\" has no host"));
        }
        let host_ok = host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        });
        if !host_ok {
            return Err(format!(
                "\"{s}\": host contains characters not allowed in a hostname"
            ));
        }
        let (port, explicit_port) = match port {
            Some(p) => (
                p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| {
                    format!("\"{s}\": port \"{p}\" is not a number from 1 to 65535")
                })?,
                true,
            ),
            None => (if https { 443 } else { 80 }, false),
        };
        if path
            .bytes()
            .chain(query.bytes())
            .any(|b| !b.is_ascii_graphic())
        {
            return Err(format!(
                "\"{s}\": path contains spaces or control characters"
            ));
        }
        Ok(Url {
            https,
            host,
            port,
            explicit_port,
            path: path.to_string(),
            query: query.to_string(),
        })
    }

    /// The default cluster name: `host:port`, port filled from the scheme.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `:authority` as a client of this URL would send it.
    pub fn authority(&self) -> String {
        if self.explicit_port {
            self.host_port()
        } else {
            self.host.clone()
        }
    }
}
