//! The rules for input from outside (docs/development.md, "Rules for input from outside")
//! that a test can check by reading vigil's source: every file is read through
//! `src/files.rs`, whose readers refuse what is not a small regular file before reading it.

use std::path::{Path, PathBuf};

/// Calls that read a whole file or stream with no limit of their own.
const UNCAPPED: &[&str] =
    &["fs::read(", "fs::read_to_string(", "read_to_string(", "read_to_end(", "ImageReader::open(", "image::open("];

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Outside `src/files.rs` and test code (from a file's `#[cfg(test)]` on), no file or stream
/// is read whole without a cap; a read bounded another way says so on the line before it
/// (`// capped: …`).
#[test]
fn every_file_read_goes_through_the_capped_readers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 50, "found only {} source files under {}", files.len(), src.display());
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("files.rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        let mut previous = "";
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.split("//").next().unwrap_or_default();
            let excused = previous.trim_start().starts_with("// capped:");
            if !excused && UNCAPPED.iter().any(|call| code.contains(call)) {
                found.push(format!("{}:{}: {}", file.strip_prefix(&src).unwrap().display(), n + 1, line.trim()));
            }
            previous = line;
        }
    }
    assert!(
        found.is_empty(),
        "reads without a cap (use crate::files::read_capped / read_text_capped / open_capped, or say \
         `// capped: why` on the line before):\n{}",
        found.join("\n")
    );
}
