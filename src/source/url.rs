//! Camera URLs (`http://` for MJPEG, `rtsp://` for RTSP) and the credentials that go with
//! them: from the URL's user information or from `username` + `password_file`. A password
//! is never shown: [`CameraUrl`] prints as `user:***@`, every `key=value` of its path and
//! query shows `key=***` unless the key is on a short list of harmless ones ([`SHOWN_KEYS`]:
//! cheap cameras take credentials as `?loginuse=admin&loginpas=…`, `?user=…&psw=…`,
//! `/user=admin&password=…&channel=1`), and no error repeats the text it was given.

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

/// Keys whose values a logged URL shows: they pick a stream, never hold a secret. Every
/// other `key=value` in a camera URL's path or query is shown as `key=***`, whatever the
/// key is called (`pwd`, `psw`, `loginpas`, `passwd`, `token`, a brand's own spelling).
pub const SHOWN_KEYS: &[&str] = &[
    "action",
    "bitrate",
    "ch",
    "channel",
    "chn",
    "cmd",
    "codec",
    "compression",
    "fps",
    "framerate",
    "height",
    "media",
    "mode",
    "profile",
    "quality",
    "res",
    "resolution",
    "size",
    "stream",
    "streamtype",
    "subtype",
    "transportmode",
    "type",
    "unicast",
    "width",
];

/// A request target as the log shows it: each `key=value` whose key is not in
/// [`SHOWN_KEYS`] with its value as `***`. In the path, pairs end at `/`, `&` or `;`
/// (`/user=admin&password=…&channel=1`); in the query, at `&` or `;` only, so a value
/// holding a `/` is masked whole.
fn masked_query(target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut out = masked_pairs(path, &['/', '&', ';']);
    if let Some(query) = query {
        out.push('?');
        out += &masked_pairs(query, &['&', ';']);
    }
    out
}

/// `text` with the value of each `key=value` between `separators` masked, unless its key
/// is shown.
fn masked_pairs(text: &str, separators: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive(separators) {
        let (word, separator) = match piece.char_indices().last() {
            Some((i, c)) if separators.contains(&c) => (&piece[..i], &piece[i..]),
            _ => (piece, ""),
        };
        match word.split_once('=') {
            Some((key, _)) if !SHOWN_KEYS.contains(&key.to_ascii_lowercase().as_str()) => {
                out.push_str(key);
                out.push_str("=***");
            }
            _ => out.push_str(word),
        }
        out.push_str(separator);
    }
    out
}

/// `text` (another library's error, say) with every `rtsp://` or `http://` URL in it shown
/// as [`CameraUrl`] shows one: the password and the values of every key not in
/// [`SHOWN_KEYS`] masked; one that does not parse is replaced whole.
pub fn scrub_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["rtsp://", "http://"].iter().filter_map(|s| rest.find(s)).min() {
        out.push_str(&rest[..at]);
        // To the next blank: a password may hold any other character (a URL cannot hold a blank).
        let url_len = rest[at..].find(char::is_whitespace).unwrap_or(rest.len() - at);
        let url = &rest[at..at + url_len];
        let scheme = if url.starts_with("rtsp") { Scheme::Rtsp } else { Scheme::Http };
        match CameraUrl::parse(url, scheme) {
            Ok(parsed) => out.push_str(&parsed.to_string()),
            Err(_) => out.push_str("(a URL)"),
        }
        rest = &rest[at + url_len..];
    }
    out.push_str(rest);
    out
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

/// A password file's password: its first line (a trailing newline, or notes on the lines
/// after it, are not part of it), which must not be empty. The reason is never the text.
pub fn password_of(bytes: Vec<u8>) -> Result<String, &'static str> {
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text")?;
    let first = text.lines().next().unwrap_or_default().trim_end_matches('\r');
    if first.is_empty() {
        return Err("holds no password on its first line");
    }
    Ok(first.to_string())
}

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
            Ok(bytes) => match password_of(bytes) {
                Ok(password) => url.password = Some(password),
                Err(why) => problems.push(format!("{key}.password_file: {} {why}", file.display())),
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
        assert_eq!(url.to_string(), "http://cam:80/cgi-bin/snap.cgi?chn=0&usr=***&pwd=***");
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

    /// The forms cheap and big-brand cameras take credentials in, each shown without the
    /// secret; the keys that pick a stream are still shown.
    #[test]
    fn credentials_in_paths_and_queries_are_masked_whatever_their_key() {
        for (url, shown) in [
            // Wanscam, Loftek and other "IPCAM" firmware.
            (
                "http://cam/snapshot.cgi?loginuse=admin&loginpas=SECRET",
                "http://cam:80/snapshot.cgi?loginuse=***&loginpas=***",
            ),
            (
                "http://cam/videostream.cgi?user=x&psw=SECRET&res=32",
                "http://cam:80/videostream.cgi?user=***&psw=***&res=32",
            ),
            // Foscam.
            (
                "http://cam:88/cgi-bin/CGIStream.cgi?cmd=GetMJStream&usr=admin&pwd=SECRET",
                "http://cam:88/cgi-bin/CGIStream.cgi?cmd=GetMJStream&usr=***&pwd=***",
            ),
            // XMeye / "NetSurveillance" DVRs: the credentials in the path.
            (
                "rtsp://cam/user=admin&password=SECRET&channel=1&stream=0.sdp",
                "rtsp://cam:554/user=***&password=***&channel=1&stream=0.sdp",
            ),
            ("rtsp://cam/user=admin_password=SECRET_channel=1_stream=0.sdp", "rtsp://cam:554/user=***"),
            // Dahua and Amcrest take the user info; their stream keys stay readable.
            (
                "rtsp://admin:SECRET@cam/cam/realmonitor?channel=1&subtype=1",
                "rtsp://admin:***@cam:554/cam/realmonitor?channel=1&subtype=1",
            ),
            (
                "http://cam/axis-cgi/mjpg/video.cgi?resolution=640x480;auth_token=SECRET",
                "http://cam:80/axis-cgi/mjpg/video.cgi?resolution=640x480;auth_token=***",
            ),
            ("http://cam/video?account=a&passwd=SECRET&t=SECRET", "http://cam:80/video?account=***&passwd=***&t=***"),
        ] {
            let scheme = if url.starts_with("rtsp") { Scheme::Rtsp } else { Scheme::Http };
            let parsed = CameraUrl::parse(url, scheme).unwrap();
            assert_eq!(parsed.to_string(), shown);
            assert!(!format!("{parsed:?}").contains("SECRET"));
        }
    }

    #[test]
    fn urls_in_other_text_are_scrubbed() {
        assert_eq!(
            scrub_urls("DESCRIBE rtsp://127.0.0.1:8554/live?user=admin&psw=SECRET failed (rtsp://a:SECRET@cam/x)"),
            "DESCRIBE rtsp://127.0.0.1:8554/live?user=***&psw=*** failed (rtsp://a:***@cam:554/x)"
        );
        assert_eq!(scrub_urls("no url here"), "no url here");
        assert_eq!(scrub_urls("at http://cam/a b"), "at http://cam:80/a b");
        assert!(!scrub_urls("rtsp://x:SE CRET@").contains("SE"));
        let scrubbed = scrub_urls("failed (rtsp://a:SE,CR'ET@cam/x), retrying");
        assert!(!scrubbed.contains("SE") && !scrubbed.contains("CR") && !scrubbed.contains("ET@"), "{scrubbed}");
        assert_eq!(masked_query("/live?pwd=ab/cd;user=x&channel=2"), "/live?pwd=***;user=***&channel=2");
    }

    #[test]
    fn a_password_file_gives_its_first_line_and_may_not_be_empty() {
        assert_eq!(password_of(b"s3cret\n".to_vec()), Ok("s3cret".into()));
        assert_eq!(password_of(b"s3cret\r\nrotated 2026-11-02\nold: hunter2\n".to_vec()), Ok("s3cret".into()));
        assert_eq!(password_of(b" spaces kept \n".to_vec()), Ok(" spaces kept ".into()));
        for empty in [&b""[..], b"\n", b"\nsecond line"] {
            assert_eq!(password_of(empty.to_vec()), Err("holds no password on its first line"));
        }
        assert_eq!(password_of(vec![0xff, b'\n']), Err("is not UTF-8 text"));
    }
}
