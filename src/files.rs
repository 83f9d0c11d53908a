//! Reading files whose size the user does not control: every read is capped, so a path to
//! `/dev/zero`, a FIFO, a folder or a runaway file is an error naming what it is and the
//! limit, not all of memory or a read that never returns.

use std::io::Read;
use std::path::Path;

/// Opens `path` for reading if it is a regular file (a symlink to one is followed) of at most
/// `max` bytes. A folder, a FIFO, a socket or a device (`/dev/zero`) is refused without
/// blocking (the open does not wait for a FIFO's writer), and so is a larger file, before
/// anything is read. The reader stops one byte past `max`, for a file that grows meanwhile.
pub fn open_capped(path: &Path, max: u64) -> std::io::Result<std::io::Take<std::fs::File>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    let kind_of = |meta: &std::fs::Metadata| -> Result<(), std::io::Error> {
        let kind = meta.file_type();
        if kind.is_dir() {
            return Err(refuse("a folder, not a file".into()));
        }
        if !kind.is_file() {
            let what = if kind.is_fifo() {
                "a FIFO (named pipe)"
            } else if kind.is_socket() {
                "a socket"
            } else if kind.is_char_device() || kind.is_block_device() {
                "a device"
            } else {
                "not a plain file"
            };
            return Err(refuse(format!("{what}, not a regular file")));
        }
        if meta.len() > max {
            return Err(refuse(format!("{} bytes, larger than the limit of {max} bytes", meta.len())));
        }
        Ok(())
    };
    // What it is, before opening it: opening a device can act (a watchdog arms, a terminal
    // becomes the controlling one).
    let before = std::fs::metadata(path)?;
    kind_of(&before)?;
    // Never blocking, never a controlling terminal, whatever replaced it meanwhile; and it
    // must still be what was looked at.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let after = file.metadata()?;
    if (after.dev(), after.ino()) != (before.dev(), before.ino()) {
        return Err(refuse("replaced while it was being opened".into()));
    }
    kind_of(&after)?;
    Ok(file.take(max.saturating_add(1)))
}

/// Reads `path` whole, refusing it once it passes `max` bytes (without reading further), and
/// refusing what is not a regular file ([`open_capped`]).
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_capped(path, max)?.read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the limit of {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// How deep [`files_under`] goes below the folder it is given.
pub const MAX_DEPTH: usize = 32;

/// Every file under `dir` (in its subfolders too), sorted by path, and the folders that could
/// not be read with why. Symbolic links are followed, but each folder is entered once, however
/// many links lead to it: a loop (`loop -> .`) or a second link to a folder adds nothing, so no
/// file is listed twice through folders and the walk ends. Folders are walked shallowest first,
/// real ones before links, so a folder reached both ways is listed under its real path. At
/// most [`MAX_DEPTH`] folders deep.
pub fn files_under(dir: &Path) -> (Vec<std::path::PathBuf>, Vec<(std::path::PathBuf, std::io::Error)>) {
    use std::os::unix::fs::MetadataExt;
    let (mut files, mut failed) = (Vec::new(), Vec::new());
    let mut visited = std::collections::HashSet::new();
    if let Ok(m) = std::fs::metadata(dir) {
        visited.insert((m.dev(), m.ino()));
    }
    let mut queue = std::collections::VecDeque::from([(dir.to_path_buf(), 0)]);
    while let Some((folder, depth)) = queue.pop_front() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) => {
                failed.push((folder, e));
                continue;
            }
        };
        let mut entries: Vec<(bool, std::path::PathBuf)> =
            entries.filter_map(Result::ok).map(|e| (e.file_type().is_ok_and(|t| t.is_symlink()), e.path())).collect();
        entries.sort();
        for (_, path) in entries {
            // Followed through a link: the kind of what it points at.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => {
                    if !visited.insert((m.dev(), m.ino())) {
                        continue;
                    }
                    if depth < MAX_DEPTH {
                        queue.push_back((path, depth + 1));
                    } else {
                        failed.push((path, std::io::Error::other(format!("deeper than {MAX_DEPTH} folders"))));
                    }
                }
                // A dangling link is listed too, so that reading it names the problem.
                _ => files.push(path),
            }
        }
    }
    files.sort();
    (files, failed)
}

/// As [`read_capped`], for UTF-8 text.
pub fn read_text_capped(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_capped(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Writes `path` so that a power cut leaves the old content or the new, never a mix or an
/// empty file: written beside it, flushed to the disk, renamed over it, and the folder
/// flushed so the rename itself survives.
pub fn replace_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes a new file and flushes it to the disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes a folder's entries (a file created or renamed in it) to the disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_capped_even_on_endless_files() {
        let e = read_capped(Path::new("/dev/zero"), 1000).unwrap_err();
        assert_eq!(e.to_string(), "a device, not a regular file");
        let path = std::env::temp_dir().join(format!("vigil-files-{}", std::process::id()));
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_capped(&path, 5).unwrap(), b"12345");
        assert!(read_capped(&path, 4).is_err());
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(read_text_capped(&path, 5).unwrap_err().to_string().contains("not UTF-8"));
        replace_durably(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        std::fs::remove_file(&path).unwrap();
    }

    /// A sparse file far over the cap is refused from its size, before any byte is read; a
    /// FIFO without a writer is refused at once instead of blocking; a folder is named as one.
    #[test]
    fn what_is_not_a_small_regular_file_is_refused_before_reading() {
        let dir = std::env::temp_dir().join(format!("vigil-files-kinds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sparse = dir.join("sparse.jpg");
        std::fs::File::create(&sparse).unwrap().set_len(3 << 30).unwrap();
        let e = read_capped(&sparse, 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "3221225472 bytes, larger than the limit of 1048576 bytes");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a mode.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        let e = read_capped(&fifo, 1000).unwrap_err();
        assert_eq!(e.to_string(), "a FIFO (named pipe), not a regular file");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(read_capped(&dir, 1000).unwrap_err().to_string(), "a folder, not a file");
        let link = dir.join("zero.jpg");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert_eq!(read_capped(&link, 1000).unwrap_err().to_string(), "a device, not a regular file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A loop back to the folder itself, a loop to its parent and a second link to a
    /// subfolder: each file is listed once, and the walk ends.
    #[test]
    fn folders_are_walked_once_whatever_links_lead_back() {
        let dir = std::env::temp_dir().join(format!("vigil-files-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("test/sub")).unwrap();
        std::fs::write(dir.join("test/a.jpg"), b"a").unwrap();
        std::fs::write(dir.join("test/sub/b.jpg"), b"b").unwrap();
        std::os::unix::fs::symlink(".", dir.join("test/loop")).unwrap();
        std::os::unix::fs::symlink("..", dir.join("test/sub/up")).unwrap();
        std::os::unix::fs::symlink("sub", dir.join("test/again")).unwrap();
        let (files, failed) = files_under(&dir.join("test"));
        let names: Vec<String> = files.iter().map(|f| f.strip_prefix(&dir).unwrap().display().to_string()).collect();
        assert_eq!(names, ["test/a.jpg", "test/sub/b.jpg"], "each once, under its real path");
        assert!(failed.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
