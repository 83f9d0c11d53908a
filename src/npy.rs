//! Minimal `.npy` (NumPy format 1.0/2.0) reading and writing for little-endian f32 arrays
//! in C order: how vigil exchanges tensors with the reference scripts (bench input,
//! test fixtures) without a Python dependency in the binary.

use std::path::Path;

/// Writes `data` with `shape` as a `.npy` file.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    std::fs::write(path, encode_f32(shape, data))
}

/// `data` with `shape` as the bytes of a `.npy` file.
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), data.len(), "npy shape does not match the data");
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The largest `.npy` file read: a model's input or output tensor, far below this.
const MAX_NPY_FILE: u64 = 1 << 30;

/// Reads a little-endian f32, C-order `.npy` file: (shape, data).
pub fn read_f32(path: &Path) -> std::io::Result<(Vec<usize>, Vec<f32>)> {
    decode_f32(&crate::files::read_capped(path, MAX_NPY_FILE)?, &path.display().to_string())
}

/// Decodes the bytes of a `.npy` file; `name` is for messages.
pub fn decode_f32(bytes: &[u8], name: &str) -> std::io::Result<(Vec<usize>, Vec<f32>)> {
    let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{name}: {why}"));
    if bytes.len() < 12 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| bad("truncated header".into()))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|e| bad(e.to_string()))?;
    if !header.contains("'descr': '<f4'") {
        return Err(bad(format!("expected little-endian f32 data, header is {header}")));
    }
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran order is not supported".into()));
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(format!("no shape in header {header}")))?;
    // Dimensions read as u64, so that a 32-bit device refuses a huge shape as too large
    // rather than as unreadable.
    let dims: Vec<u64> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad(format!("bad dimension {s:?}"))))
        .collect::<Result<_, _>>()?;
    let body = &bytes[end..];
    // Checked: a hostile header can claim dimensions whose product overflows.
    let too_large = || bad(format!("shape {dims:?} is too large"));
    let shape: Vec<usize> =
        dims.iter().map(|&d| usize::try_from(d)).collect::<Result<_, _>>().map_err(|_| too_large())?;
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).filter(|n| n.checked_mul(4).is_some());
    let Some(count) = count else {
        return Err(too_large());
    };
    if body.len() != count * 4 {
        return Err(bad(format!("expected {count} values, found {} bytes", body.len())));
    }
    let data = body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = std::env::temp_dir().join(format!("vigil-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        write_f32(&path, &[2, 3, 4], &data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes.len() - 24 * 4) % 64, 0);
        assert_eq!(read_f32(&path).unwrap(), (vec![2, 3, 4], data));
        write_f32(&path, &[5], &[1.0; 5]).unwrap();
        assert_eq!(read_f32(&path).unwrap().0, vec![5]);
        let mut huge = encode_f32(&[1], &[0.0]);
        let at = huge.windows(4).position(|w| w == b"(1,)").unwrap();
        huge.splice(at..at + 4, b"(4294967296, 4294967297)".iter().copied());
        assert!(decode_f32(&huge, "x").unwrap_err().to_string().contains("too large"));
        std::fs::write(&path, b"nope").unwrap();
        assert!(read_f32(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
