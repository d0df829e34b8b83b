//! Durable writes: readers never see half a file or half a folder, and a power cut after the
//! rename cannot leave a renamed but empty one. Every file dpo-lora writes that a later step or
//! a user relies on (checkpoints, the PEFT adapter, exports, GGUF files, the reference cache,
//! the token cache, plots) goes through here.
//!
//! One mechanism, three shapes:
//! - [`StagedPath`]: a temporary path beside the destination for writers that open the file
//!   themselves (the PNG encoder); `commit` syncs it, renames it over the destination, syncs the
//!   folder.
//! - [`StagedFile`]: the same with the file opened here, for streamed writes.
//! - [`Staging`]: a hidden temporary folder; `commit` syncs every file in it and the folder,
//!   renames it over the destination (the old one moved aside first, removed after) and syncs
//!   the parent.
//! Dropped uncommitted (an error or a panic part-way), each removes its temporary and leaves the
//! destination as it was.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

/// The folder holding `p` (`.` for a bare name).
fn parent_of(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A hidden name beside `dest` that no other writer in any process uses: `.NAME.PID-N.partial`,
/// plus `dest`'s extension (encoders that pick the format from it still see it).
fn temp_beside(dest: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = dest
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    parent_of(dest).join(format!(".{name}.{}-{n}.partial{ext}", std::process::id()))
}

/// Flush a folder's directory entries (a rename into it, or files created in it) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Flush every file under `dir` and every folder in it, `dir` included.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ty = e.file_type()?;
        if ty.is_dir() {
            sync_tree(&e.path())?;
        } else if ty.is_file() {
            std::fs::File::open(e.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Rename `new` over `dir`: the old `dir` (if any) is moved aside first (under a hidden name, so
/// a crash in between leaves nothing a listing of `dir`'s siblings would take for a result) and
/// removed after.
fn replace_dir(new: &Path, dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        let old = temp_beside(dir).with_extension("old");
        std::fs::rename(dir, &old)?;
        std::fs::rename(new, dir)?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    } else {
        std::fs::rename(new, dir)
    }
}

/// A hidden temporary folder beside `out`, renamed over it by [`Staging::commit`] and removed if
/// dropped uncommitted (an error or a panic part-way leaves `out` as it was).
pub struct Staging {
    tmp: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl Staging {
    /// `force`: an existing `out` is replaced at commit; without it, an existing `out` is an error.
    pub fn new(out: &Path, force: bool) -> Result<Self> {
        if out.exists() && !force {
            bail!(
                "{}: already exists; choose another --out, or pass --force to replace it (the old one stays until the new one is complete)",
                out.display()
            );
        }
        let parent = parent_of(out);
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create the folder", parent.display()))?;
        if out.file_name().is_none() {
            bail!("{}: not a folder name", out.display());
        }
        let tmp = temp_beside(out);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp)
            .with_context(|| format!("{}: cannot create the folder", tmp.display()))?;
        Ok(Self {
            tmp,
            out: out.to_path_buf(),
            committed: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    pub fn commit(mut self) -> Result<()> {
        let fail = |e: std::io::Error| {
            anyhow::Error::new(e)
                .context(format!("{}: cannot move it into place", self.out.display()))
        };
        sync_tree(&self.tmp).map_err(fail)?;
        replace_dir(&self.tmp, &self.out).map_err(fail)?;
        self.committed = true;
        sync_dir(parent_of(&self.out)).map_err(fail)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// A temporary path beside `dest` for a writer that creates the file itself;
/// [`StagedPath::commit`] syncs it, renames it over `dest` and syncs the folder. `dest`'s folder
/// must exist (a missing one is the caller's error to report, not a folder to invent).
pub struct StagedPath {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl StagedPath {
    pub fn new(dest: &Path) -> std::io::Result<Self> {
        if dest.file_name().is_none() {
            return Err(std::io::Error::other(format!(
                "{}: not a file name",
                dest.display()
            )));
        }
        Ok(Self {
            tmp: temp_beside(dest),
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn commit(mut self) -> std::io::Result<()> {
        std::fs::File::open(&self.tmp)?.sync_all()?;
        std::fs::rename(&self.tmp, &self.dest)?;
        self.committed = true;
        sync_dir(parent_of(&self.dest))
    }
}

impl Drop for StagedPath {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A [`StagedPath`] opened for writing here (buffered), for streamed files.
pub struct StagedFile {
    path: StagedPath,
    w: std::io::BufWriter<std::fs::File>,
}

impl StagedFile {
    pub fn create(dest: &Path) -> std::io::Result<Self> {
        let path = StagedPath::new(dest)?;
        let f = std::fs::File::create(path.path())?;
        Ok(Self {
            path,
            w: std::io::BufWriter::new(f),
        })
    }

    pub fn writer(&mut self) -> &mut std::io::BufWriter<std::fs::File> {
        &mut self.w
    }

    pub fn commit(self) -> std::io::Result<()> {
        let f = self.w.into_inner().map_err(|e| e.into_error())?;
        drop(f);
        self.path.commit()
    }
}

/// Write `bytes` to `dest` through a [`StagedFile`].
pub fn write_file(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = StagedFile::create(dest)?;
    f.writer().write_all(bytes)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_export_leaves_the_old_folder_and_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("good.txt"), "old").unwrap();
        {
            let s = Staging::new(&out, true).unwrap();
            std::fs::write(s.dir().join("half.bin"), "partial").unwrap();
            // dropped without commit: the export failed part-way
        }
        let names: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["out"]);
        assert_eq!(
            std::fs::read_to_string(out.join("good.txt")).unwrap(),
            "old"
        );
        let s = Staging::new(&out, true).unwrap();
        std::fs::write(s.dir().join("new.txt"), "new").unwrap();
        s.commit().unwrap();
        assert!(!out.join("good.txt").exists());
        assert_eq!(std::fs::read_to_string(out.join("new.txt")).unwrap(), "new");
        assert!(Staging::new(&out, false).is_err());
    }

    #[test]
    fn a_staged_file_keeps_its_extension_and_leaves_nothing_when_dropped() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("plot.png");
        std::fs::write(&dest, "old").unwrap();
        {
            let p = StagedPath::new(&dest).unwrap();
            assert_eq!(p.path().extension().unwrap(), "png");
            assert_eq!(p.path().parent(), dest.parent());
            std::fs::write(p.path(), "half").unwrap();
        }
        let names = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(t.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(), ["plot.png"]);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old");
        write_file(&dest, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(names(), ["plot.png"]);
    }
}
