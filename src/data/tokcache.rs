//! Tokenized records kept with the run (`<output.dir>/tokens/<key>.bin`), so a resumed or
//! repeated run does not read and tokenize its data again.
//!
//! Owns: the file: each record's token ids before truncation (truncation is applied when read,
//! so the limits are not in the key), then a JSON footer with what was read from each source,
//! its length, and a magic. Written to a temporary name and renamed into place when complete:
//! a run stopped while tokenizing leaves no cache, never a half one. Every size read back is
//! checked against the file's length before anything is allocated from it; a file that does not
//! check out is ignored (and rewritten). Does not: choose the key's inputs (see `train::sets`).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::batch::Encoded;
use super::{EncodedSide, SourceSummary};
use crate::atomic::StagedFile;

const MAGIC: &[u8; 8] = b"DPOTOK01";

/// The cache key: a SHA-256 over `parts` (the data files' digests, how they were read, the
/// tokenizer and template), 32 hex digits.
pub fn key(parts: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(MAGIC);
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    format!("{:x}", h.finalize())[..32].to_string()
}

pub fn path(dir: &Path, key: &str) -> PathBuf {
    dir.join("tokens").join(format!("{key}.bin"))
}

/// Streams records into a cache file as they are encoded (through [`StagedFile`]: nothing is
/// at the cache's name until the whole file is).
pub struct Writer {
    file: StagedFile,
    n: u64,
}

impl Writer {
    pub fn create(dest: &Path) -> std::io::Result<Writer> {
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Writer {
            file: StagedFile::create(dest)?,
            n: 0,
        })
    }

    pub fn push(&mut self, e: &Encoded) -> std::io::Result<()> {
        let w = self.file.writer();
        w.write_all(&(e.index as u64).to_le_bytes())?;
        for side in [&e.chosen, &e.rejected] {
            w.write_all(&(side.ids.len() as u32).to_le_bytes())?;
            w.write_all(&(side.prompt_len as u32).to_le_bytes())?;
        }
        for side in [&e.chosen, &e.rejected] {
            for id in &side.ids {
                w.write_all(&id.to_le_bytes())?;
            }
        }
        self.n += 1;
        Ok(())
    }

    /// Write the footer and move the file into place.
    pub fn finish(mut self, summary: &[SourceSummary]) -> std::io::Result<()> {
        let footer = serde_json::to_vec(&(self.n, summary)).map_err(std::io::Error::other)?;
        let w = self.file.writer();
        w.write_all(&footer)?;
        w.write_all(&(footer.len() as u64).to_le_bytes())?;
        w.write_all(MAGIC)?;
        self.file.commit()
    }
}

/// Read a cache file, calling `f` with each record in order; `None` when there is none or it
/// does not check out.
pub fn read(path: &Path, mut f: impl FnMut(Encoded) -> bool) -> Option<Vec<SourceSummary>> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    if len < 16 {
        return None;
    }
    file.seek(SeekFrom::End(-16)).ok()?;
    let mut tail = [0u8; 16];
    file.read_exact(&mut tail).ok()?;
    if &tail[8..] != MAGIC {
        return None;
    }
    let footer_len = u64::from_le_bytes(tail[..8].try_into().ok()?);
    let body_len = len.checked_sub(16)?.checked_sub(footer_len)?;
    file.seek(SeekFrom::Start(body_len)).ok()?;
    let mut footer = vec![0u8; footer_len as usize];
    file.read_exact(&mut footer).ok()?;
    let (n, summary): (u64, Vec<SourceSummary>) = serde_json::from_slice(&footer).ok()?;
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut r = BufReader::new(file).take(body_len);
    let mut left = body_len;
    let u32_at = |r: &mut dyn Read| -> Option<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).ok()?;
        Some(u32::from_le_bytes(b))
    };
    for _ in 0..n {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).ok()?;
        let index = u64::from_le_bytes(b) as usize;
        let (cl, cp, rl, rp) = (
            u32_at(&mut r)? as u64,
            u32_at(&mut r)? as usize,
            u32_at(&mut r)? as u64,
            u32_at(&mut r)? as usize,
        );
        left = left.checked_sub(24)?;
        let bytes = (cl + rl).checked_mul(4)?;
        if bytes > left || cp as u64 > cl || rp as u64 > rl {
            return None;
        }
        left -= bytes;
        let mut ids = |n: u64| -> Option<Vec<u32>> {
            let mut v = Vec::with_capacity(n as usize);
            for _ in 0..n {
                v.push(u32_at(&mut r)?);
            }
            Some(v)
        };
        let chosen = EncodedSide {
            ids: ids(cl)?,
            prompt_len: cp,
        };
        let rejected = EncodedSide {
            ids: ids(rl)?,
            prompt_len: rp,
        };
        if !f(Encoded {
            index,
            chosen,
            rejected,
        }) {
            return None;
        }
    }
    (left == 0).then_some(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(i: usize) -> Encoded {
        Encoded {
            index: i,
            chosen: EncodedSide {
                ids: (0..(3 + i as u32)).collect(),
                prompt_len: 2,
            },
            rejected: EncodedSide {
                ids: vec![9, 8, 7, 6],
                prompt_len: 2,
            },
        }
    }

    #[test]
    fn round_trips_and_refuses_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), &key(&["a".into()]));
        let mut w = Writer::create(&p).unwrap();
        for i in 0..5 {
            w.push(&enc(i)).unwrap();
        }
        let summary = vec![SourceSummary {
            source: "x.jsonl".into(),
            files: vec!["x.jsonl".into()],
            layout: "trl (text)".into(),
            records: 5,
        }];
        w.finish(&summary).unwrap();
        let mut got = Vec::new();
        let s = read(&p, |e| {
            got.push(e);
            true
        })
        .unwrap();
        assert_eq!(s[0].records, 5);
        assert_eq!(got.len(), 5);
        assert_eq!(got[4].chosen.ids, enc(4).chosen.ids);
        // a length that points past the file is refused, not allocated
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        assert!(read(&p, |_| true).is_none());
        // a file cut short has no footer
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(read(&p, |_| true).is_none());
        // an unfinished writer leaves nothing behind
        let q = path(dir.path(), "unfinished");
        let mut w = Writer::create(&q).unwrap();
        w.push(&enc(0)).unwrap();
        drop(w);
        assert!(!q.exists());
        assert_eq!(std::fs::read_dir(q.parent().unwrap()).unwrap().count(), 1);
    }
}
