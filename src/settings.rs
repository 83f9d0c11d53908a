//! Reading one table of settings, for the configuration ([`crate::config`]) and for the
//! modules that own a part of it (each frame source kind reads its own keys,
//! [`crate::source::check`]): a serde struct exactly as written, with every unknown key and
//! the first type error reported under its key path, so that one run lists every problem.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Deserialises one section, recording unknown keys ("`prefix.key`: unknown key") and the
/// first type error under `prefix`. After a type error the section is `None`: its other
/// checks would only report what the error already explains (a camera's "missing" source,
/// say).
pub fn section<T: DeserializeOwned>(value: Value, prefix: &str, problems: &mut Vec<String>) -> Option<T> {
    section_as(value, prefix, problems, "unknown key")
}

/// As [`section`], with `unknown` saying what an unknown key is ("not a key of a replay
/// source").
pub fn section_as<T: DeserializeOwned>(
    value: Value,
    prefix: &str,
    problems: &mut Vec<String>,
    unknown: &str,
) -> Option<T> {
    let mut ignored = Vec::new();
    // serde_ignored writes `?` for an Option level; users never see those.
    let mut record = |path: serde_ignored::Path| {
        ignored.push(path.to_string().split('.').filter(|p| *p != "?").collect::<Vec<_>>().join("."))
    };
    let parsed = serde_path_to_error::deserialize::<_, T>(serde_ignored::Deserializer::new(value, &mut record));
    let join = |path: &str| if prefix.is_empty() { path.to_string() } else { format!("{prefix}.{path}") };
    for key in ignored {
        problems.push(format!("{}: {unknown}", join(&key)));
    }
    match parsed {
        Ok(v) => Some(v),
        Err(e) => {
            let path = e.path().to_string();
            let at = if path == "." { prefix.to_string() } else { join(&path) };
            problems.push(format!("{at}: {}", e.into_inner()));
            None
        }
    }
}

/// A path from the configuration: relative ones are taken from the configuration's folder.
pub fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// The slowest frame rate a setting takes: one frame in 1 000 s. (Slower rates overflow
/// `Duration`.)
pub const MIN_FPS: f64 = 0.001;
