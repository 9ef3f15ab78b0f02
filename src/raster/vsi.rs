//! Scenes behind GDAL's virtual file systems: object storage (`s3://…` = `/vsis3/…`,
//! `gs://…` = `/vsigs/…`, `/vsiaz/`, `/vsicurl/`) and archives (`/vsizip/`, `/vsitar/`):
//! listing a prefix, stat (size and modification time, for fingerprints) and reading whole
//! objects (for `--verify`), all through GDAL's VSI layer so that credentials and endpoints
//! come from GDAL's usual configuration (`AWS_S3_ENDPOINT`, `AWS_PROFILE`, …).

use std::ffi::CString;

use sha2::{Digest, Sha256};

/// The GDAL path of `path`: `s3://b/k` → `/vsis3/b/k`, `gs://b/k` → `/vsigs/b/k`; a `/vsi…`
/// path as it is; `None` for a local path.
pub fn to_vsi(path: &str) -> Option<String> {
    for (scheme, vsi) in [("s3://", "/vsis3/"), ("gs://", "/vsigs/"), ("az://", "/vsiaz/")] {
        if let Some(rest) = path.strip_prefix(scheme) {
            return Some(format!("{vsi}{rest}"));
        }
    }
    path.starts_with("/vsi").then(|| path.to_string())
}

/// What `VSIStatL` says of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VsiStat {
    pub size: u64,
    pub mtime_ns: i128,
    pub is_file: bool,
}

/// Size, modification time and kind of a VSI path; `None` when it does not exist.
pub fn stat(path: &str) -> Option<VsiStat> {
    let c_path = CString::new(path).ok()?;
    // SAFETY: on Linux GDAL's VSIStatBufL is the C library's `struct stat64` (opaque in the
    // bindings), which VSIStatL fills; the path is a valid C string.
    unsafe {
        let mut st: libc::stat64 = std::mem::zeroed();
        let buf = (&mut st as *mut libc::stat64).cast::<gdal_sys::VSIStatBufL>();
        if gdal_sys::VSIStatL(c_path.as_ptr(), buf) != 0 {
            return None;
        }
        Some(VsiStat {
            size: st.st_size as u64,
            mtime_ns: st.st_mtime as i128 * 1_000_000_000,
            is_file: (st.st_mode & libc::S_IFMT) == libc::S_IFREG,
        })
    }
}

/// Every object under the VSI prefix `dir` (recursively), as full VSI paths, sorted.
pub fn list_files(dir: &str) -> Result<Vec<String>, String> {
    let base = dir.trim_end_matches('/');
    let entries = gdal::vsi::read_dir(base, true).map_err(|e| format!("cannot list {dir}: {e}"))?;
    let mut files: Vec<String> = entries
        .into_iter()
        .map(|e| e.to_string_lossy().into_owned())
        .filter(|e| !e.ends_with('/'))
        .map(|e| format!("{base}/{e}"))
        .filter(|p| stat(p).is_some_and(|s| s.is_file))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads an object through VSI, handing each piece (up to 1 MiB) to `each`.
fn read_pieces(path: &str, mut each: impl FnMut(&[u8])) -> Result<(), String> {
    let c_path = CString::new(path).map_err(|_| "path holds a NUL byte".to_string())?;
    let mode = CString::new("rb").map_err(|e| e.to_string())?;
    // SAFETY: VSIFOpenL/VSIFReadL/VSIFCloseL on a handle this function owns; the buffer is
    // valid for `buf.len()` bytes.
    unsafe {
        let file = gdal_sys::VSIFOpenL(c_path.as_ptr(), mode.as_ptr());
        if file.is_null() {
            return Err("cannot open through GDAL".into());
        }
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = gdal_sys::VSIFReadL(buf.as_mut_ptr().cast(), 1, buf.len(), file);
            if n == 0 {
                break;
            }
            each(&buf[..n]);
        }
        gdal_sys::VSIFCloseL(file);
    }
    Ok(())
}

/// The sha256 of an object, read through VSI.
pub fn sha256(path: &str) -> Result<String, String> {
    let mut hasher = Sha256::new();
    read_pieces(path, |piece| hasher.update(piece)).map_err(|e| format!("--verify: {e}"))?;
    Ok(crate::files::hex(&hasher.finalize()))
}

/// A whole object as text (a STAC JSON document), read through VSI.
pub fn read_to_string(path: &str) -> Result<String, String> {
    let mut bytes = Vec::new();
    read_pieces(path, |piece| bytes.extend_from_slice(piece))?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_store_urls_become_gdal_paths() {
        assert_eq!(to_vsi("s3://bucket/a/b.tif").as_deref(), Some("/vsis3/bucket/a/b.tif"));
        assert_eq!(to_vsi("gs://b/k").as_deref(), Some("/vsigs/b/k"));
        assert_eq!(to_vsi("/vsizip//data/s.zip").as_deref(), Some("/vsizip//data/s.zip"));
        assert_eq!(to_vsi("/data/scene.tif"), None);
    }

    #[test]
    fn a_zip_is_listed_stat_and_hashed_through_vsi() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("scenes.zip");
        {
            let f = std::fs::File::create(&zip).unwrap();
            // A stored (uncompressed) zip of one file, written by hand: header, data, directory.
            let data = b"hello scene";
            let crc = crc32(data);
            let name = b"sub/a.tif";
            let mut out = Vec::new();
            let local = |out: &mut Vec<u8>| {
                out.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                out.extend_from_slice(&crc.to_le_bytes());
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(name);
                out.extend_from_slice(data);
            };
            local(&mut out);
            let cd_start = out.len() as u32;
            out.extend_from_slice(&[0x50, 0x4b, 0x01, 0x02, 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&[0; 12]);
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(name);
            let cd_len = out.len() as u32 - cd_start;
            out.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 1, 0, 1, 0]);
            out.extend_from_slice(&cd_len.to_le_bytes());
            out.extend_from_slice(&cd_start.to_le_bytes());
            out.extend_from_slice(&[0, 0]);
            std::io::Write::write_all(&mut &f, &out).unwrap();
        }
        let prefix = format!("/vsizip/{}", zip.display());
        let files = list_files(&prefix).unwrap();
        assert_eq!(files, vec![format!("{prefix}/sub/a.tif")]);
        let st = stat(&files[0]).unwrap();
        assert!(st.is_file && st.size == 11);
        assert_eq!(sha256(&files[0]).unwrap(), crate::files::sha256_hex(b"hello scene"));
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
