//! The shipped corpus's file: gzip-compressed JSON lines, one record per
//! install, sorted by id, written with no timestamp in the gzip header, so
//! that the same records give the same bytes (and the same digest) on
//! every machine. `train`, `eval` and `crossval` read it directly.
//!
//! Why gzip and not zstd: flate2 is already a dependency, and JSON lines
//! of feature windows compress to a few MB either way.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;

use super::corpus::{CorpusError, Record};

/// The file a corpus argument names: itself when it is a file, else
/// DIR/deployments.jsonl, else DIR/deployments.jsonl.gz.
pub fn locate(arg: &Path) -> PathBuf {
    if arg.is_file() {
        return arg.to_path_buf();
    }
    let plain = arg.join("deployments.jsonl");
    let gz = arg.join("deployments.jsonl.gz");
    if !plain.exists() && gz.exists() {
        gz
    } else {
        plain
    }
}

/// Its lines, decompressed when the name ends in `.gz`.
pub fn open(path: &Path) -> std::io::Result<Box<dyn BufRead>> {
    let f = std::fs::File::open(path)?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(GzDecoder::new(f)))
    } else {
        Box::new(BufReader::new(f))
    })
}

/// Write `records` to `path` as the shipped format: sorted by id, gzip
/// level 9, header without mtime or name.
pub fn write_packed(path: &Path, records: &[Record]) -> Result<(), CorpusError> {
    let io = |source| CorpusError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("gz.tmp");
    let f = std::fs::File::create(&tmp).map_err(io)?;
    let mut z = flate2::GzBuilder::new()
        .mtime(0)
        .write(std::io::BufWriter::new(f), Compression::best());
    for r in sorted {
        let line = serde_json::to_string(r).map_err(|e| io(std::io::Error::other(e)))?;
        writeln!(z, "{line}").map_err(io)?;
    }
    let w = z.finish().map_err(io)?;
    w.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The records' digest when it is `expected`; refused otherwise, before
/// anything is trained (`cargo xtask train-default` passes the digest the
/// shipped model records).
pub fn expect_digest(records: &[Record], expected: &str) -> Result<String, CorpusError> {
    let found = super::corpus::digest(records);
    if found == expected {
        Ok(found)
    } else {
        Err(CorpusError::Digest {
            expected: expected.to_string(),
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::corpus::{digest, read, synthetic};
    use super::*;

    #[test]
    fn a_packed_corpus_reads_back_and_packs_to_the_same_bytes() {
        let dir = std::env::temp_dir().join(format!("backstop-packed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let all = synthetic(2, 3, 2);
        let a = dir.join("a.jsonl.gz");
        let b = dir.join("deployments.jsonl.gz");
        write_packed(&a, &all).unwrap();
        let mut reversed = all.clone();
        reversed.reverse();
        write_packed(&b, &reversed).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        // Named directly, or found in its directory.
        let back = read(&[&a]).unwrap();
        let mut sorted = all.clone();
        sorted.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(digest(&back), digest(&sorted));
        assert_eq!(digest(&read(&[&dir]).unwrap()), digest(&sorted));
        assert!(expect_digest(&back, &digest(&sorted)).is_ok());
        let e = expect_digest(&back[1..], &digest(&sorted))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&digest(&sorted)) && e.contains("not the corpus"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
