//! The entry points: text or a file in, a validated manifest or the
//! error naming the field out. Only `load` touches the disk, to read the
//! one file, with the size limit applied while reading.

use std::path::Path;

use super::{MAX_BYTES, Manifest, ManifestError, check, parse};

impl Manifest {
    /// Parse and validate a manifest. Relative paths are refused: use
    /// [`Manifest::load`] for a file whose artifact sits beside it.
    pub fn from_toml(text: &str) -> Result<Manifest, ManifestError> {
        Self::from_toml_in(text, None)
    }

    /// Parse and validate; relative artifact and root paths are taken
    /// from `base` when given, refused when not.
    pub fn from_toml_in(text: &str, base: Option<&Path>) -> Result<Manifest, ManifestError> {
        if text.len() > MAX_BYTES {
            return Err(ManifestError::TooLarge { limit: MAX_BYTES });
        }
        let m = parse::manifest(text, base)?;
        check::manifest(&m)?;
        Ok(m)
    }

    /// Read, parse and validate the file at `path`. Relative `root`,
    /// `artifact.debs` and `artifact.dir` are taken from the file's
    /// directory, so a manifest can name the package beside it.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let in_file = |e| ManifestError::File {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        let text = match read_limited(path) {
            Ok(t) => t,
            Err(e @ ManifestError::Read { .. }) => return Err(e),
            Err(e) => return Err(in_file(e)),
        };
        let dir = path.parent().map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        });
        let base = match dir.map(std::path::absolute) {
            Some(Ok(d)) => Some(d),
            Some(Err(source)) => {
                return Err(ManifestError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
            None => None,
        };
        Self::from_toml_in(&text, base.as_deref()).map_err(in_file)
    }
}

/// The file's text, refusing one over [`MAX_BYTES`] without reading it all.
fn read_limited(path: &Path) -> Result<String, ManifestError> {
    use std::io::Read;
    let read = |source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read)?;
    let mut buf = Vec::new();
    f.take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(read)?;
    if buf.len() > MAX_BYTES {
        return Err(ManifestError::TooLarge { limit: MAX_BYTES });
    }
    String::from_utf8(buf).map_err(|e| ManifestError::Syntax {
        line: 1,
        reason: format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to()),
    })
}
