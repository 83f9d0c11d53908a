//! Camera URLs (`http://` for MJPEG, `rtsp://` for RTSP) and the credentials that go with
//! them: from the URL's user information or from `username` + `password_file`. A password
//! is never shown: [`CameraUrl`] prints as `user:***@`, secret-looking query values are
//! masked, and no error repeats the text it was given.

use std::path::{Path, PathBuf};

use crate::settings::resolve;

/// A camera's `http://` or `rtsp://` URL, its credentials apart. Shown (`Display`,
/// `Debug`) with the password masked.
#[derive(Clone, PartialEq)]
pub struct CameraUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path and query, as sent in the request line (`/stream?res=vga`).
    pub target: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The protocols camera URLs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Rtsp,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Rtsp => "rtsp",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Rtsp => 554,
        }
    }
}

impl CameraUrl {
    /// `host:port` as a URL writes it (an IPv6 address in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL without user name or password (they go apart, in the protocol's own way).
    pub fn without_credentials(&self) -> String {
        format!("{}://{}{}", self.scheme.name(), self.authority(), self.target)
    }
}

impl std::fmt::Display for CameraUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            _ => String::new(),
        };
        write!(f, "{}://{user}{}{}", self.scheme.name(), self.authority(), masked_query(&self.target))
    }
}

/// A request target with the values of secret-looking query keys (`pwd=`, `password=`,
/// `token=`, …: some cameras take credentials so) shown as `***`.
fn masked_query(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else { return target.to_string() };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pw", "pass", "token", "key", "auth", "secret", "sig"].iter().any(|s| key.contains(s))
}

impl std::fmt::Debug for CameraUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// The longest URL taken.
const MAX_URL: usize = 2048;

impl CameraUrl {
    /// Reads `SCHEME://[user[:password]@]host[:port][/path][?query]` for the scheme a
    /// source takes (user and password percent-decoded). The errors say what to change and
    /// never hold the password.
    pub fn parse(text: &str, scheme: Scheme) -> Result<CameraUrl, String> {
        if text.len() > MAX_URL {
            return Err(format!("is over {MAX_URL} bytes"));
        }
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err("holds spaces or control characters (percent-encode them)".into());
        }
        let Some(rest) = text.strip_prefix(scheme.name()).and_then(|r| r.strip_prefix("://")) else {
            return Err(wrong_scheme(text, scheme));
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let target = if target.starts_with('?') { format!("/{target}") } else { target.to_string() };
        let target = match target.find('#') {
            Some(i) => target[..i].to_string(),
            None => target,
        };
        if target.contains('@') {
            // Most likely a password with a '/' or '?' in it, split there: never echoed.
            return Err("has an '@' after the host: percent-encode '/', '?', '#' and '@' in a user name or \
                        password (%2F, %3F, %23, %40)"
                .into());
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (name, password) = match u.split_once(':') {
                    Some((n, p)) => (n, Some(percent_decode(p)?)),
                    None => (u, None),
                };
                (Some(percent_decode(name)?), password)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("has an IPv6 address without its closing ]")?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err("has text after the IPv6 address".into()),
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        let port = match port {
            None => scheme.default_port(),
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err("has a bad port (a number from 1 to 65535)".into()),
            },
        };
        Ok(CameraUrl { scheme, host: host.to_string(), port, target, username, password })
    }
}

/// Why a URL for `scheme` is not one, and what to use instead.
fn wrong_scheme(text: &str, scheme: Scheme) -> String {
    let other = |prefix: &str| text.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    match scheme {
        Scheme::Http if other("https://") => {
            "https:// is not supported: use the camera's http:// URL (on a network you trust)".into()
        }
        Scheme::Http if other("rtsp://") => "is an RTSP URL: use kind = \"rtsp\" for it".into(),
        Scheme::Rtsp if other("rtsps://") => {
            "rtsps:// (RTSP over TLS) is not supported: use the camera's rtsp:// URL (on a network you trust)".into()
        }
        Scheme::Rtsp if other("http://") || other("https://") => {
            "is an HTTP URL: use kind = \"mjpeg\" for a camera serving MJPEG or snapshots over http://".into()
        }
        _ => format!("must start with {}://", scheme.name()),
    }
}

/// `%41` → `A` in URL user information; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a bad %-escape in its user name or password")?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "has a user name or password that is not UTF-8 once decoded".into())
}

/// The largest password file read.
const MAX_PASSWORD_FILE: u64 = 4096;

/// Reads a source's `url` with its `username` and `password_file` keys (`key` is the
/// source table's path, relative paths start at `dir`), adding every problem to `problems`.
pub fn check(
    url: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    scheme: Scheme,
    key: &str,
    dir: &Path,
    problems: &mut Vec<String>,
) -> Option<CameraUrl> {
    let Some(text) = url else {
        let what = match scheme {
            Scheme::Http => "the camera's http:// stream or snapshot URL",
            Scheme::Rtsp => "the camera's rtsp:// stream URL",
        };
        problems.push(format!("{key}.url: missing ({what})"));
        return None;
    };
    let mut url = match CameraUrl::parse(&text, scheme) {
        Ok(url) => url,
        Err(why) => {
            // Never the text itself: it may hold a password.
            problems.push(format!("{key}.url: {why}"));
            return None;
        }
    };
    if let Some(name) = username {
        if url.username.is_some() {
            problems.push(format!("{key}.username: the url names a user already (give it one way)"));
        }
        url.username = Some(name);
    }
    if let Some(file) = password_file {
        let file = resolve(dir, &file);
        if url.password.is_some() {
            problems.push(format!("{key}.password_file: the url holds a password already (give it one way)"));
        }
        if url.username.is_none() {
            problems.push(format!("{key}.password_file: needs a user name (`username`, or user@ in the url)"));
        }
        match crate::files::read_capped(&file, MAX_PASSWORD_FILE) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => url.password = Some(text.trim_end_matches(['\n', '\r']).to_string()),
                Err(_) => problems.push(format!("{key}.password_file: {} is not UTF-8 text", file.display())),
            },
            Err(e) => problems.push(format!("{key}.password_file: cannot read {}: {e}", file.display())),
        }
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_and_shown_without_the_password() {
        let http = |text| CameraUrl::parse(text, Scheme::Http);
        let url = http("http://admin:p%40ss@cam.lan:8080/video?res=vga").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.target.as_str()), ("cam.lan", 8080, "/video?res=vga"));
        assert_eq!((url.username.as_deref(), url.password.as_deref()), (Some("admin"), Some("p@ss")));
        assert_eq!(url.to_string(), "http://admin:***@cam.lan:8080/video?res=vga");
        assert_eq!(url.without_credentials(), "http://cam.lan:8080/video?res=vga");
        assert!(!format!("{url:?}").contains("p@ss"));
        let url = http("http://[::1]/").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.target.as_str()), ("::1", 80, "/"));
        assert_eq!(url.without_credentials(), "http://[::1]:80/");
        assert_eq!(http("http://10.0.0.9?x=1").unwrap().target, "/?x=1");
        let url = http("http://cam/cgi-bin/snap.cgi?chn=0&usr=admin&pwd=hunter2").unwrap();
        assert_eq!(url.to_string(), "http://cam:80/cgi-bin/snap.cgi?chn=0&usr=admin&pwd=***");
        assert!(url.target.ends_with("pwd=hunter2"), "the request still carries it");
        let url = CameraUrl::parse("rtsp://admin:s3cret@192.168.1.64/Streaming/Channels/102", Scheme::Rtsp).unwrap();
        assert_eq!((url.port, url.target.as_str()), (554, "/Streaming/Channels/102"));
        assert_eq!(url.to_string(), "rtsp://admin:***@192.168.1.64:554/Streaming/Channels/102");
        for bad in ["http://admin:s3/cr3t@cam/", "http://admin:s3?cr3t@cam/", "http://admin:s3cr3t/@cam/"] {
            let e = http(bad).unwrap_err();
            assert!(!e.contains("s3") && !e.contains("cr3t"), "the password in an error: {e}");
        }
        for (bad, scheme, why) in [
            ("https://cam/", Scheme::Http, "https:// is not supported"),
            ("rtsp://cam/", Scheme::Http, "use kind = \"rtsp\""),
            ("cam.lan/video", Scheme::Http, "must start with http://"),
            ("http:///video", Scheme::Http, "no host"),
            ("http://cam:0/", Scheme::Http, "bad port"),
            ("http://cam:99999/", Scheme::Http, "bad port"),
            ("http://a:%zz@cam/", Scheme::Http, "%-escape"),
            ("http://cam/a b", Scheme::Http, "spaces"),
            ("http://admin:12/34@cam/", Scheme::Http, "percent-encode"),
            ("http://cam/video", Scheme::Rtsp, "use kind = \"mjpeg\""),
            ("rtsps://cam/", Scheme::Rtsp, "rtsps:// (RTSP over TLS) is not supported"),
            ("cam:554/live", Scheme::Rtsp, "must start with rtsp://"),
        ] {
            let e = CameraUrl::parse(bad, scheme).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
