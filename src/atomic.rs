//! Writing a folder so that readers never see half of it: build it in a hidden temporary
//! sibling, then rename it over the destination (the old one is moved aside first and removed
//! only after). Used by the PEFT adapter, checkpoints and every export. And the same for one
//! streamed file ([`StagedFile`], the token cache), synced before and after its rename.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Rename `new` over `dir`: the old `dir` (if any) is moved aside first and removed after.
pub fn replace_dir(new: &Path, dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        let old = dir.with_extension(format!("old-{}", std::process::id()));
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
    pub fn new(out: &Path, force: bool) -> Result<Self> {
        if out.exists() && !force {
            bail!(
                "{}: already exists; choose another --out, or pass --force to replace it (the old one stays until the new one is complete)",
                out.display()
            );
        }
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create the folder", parent.display()))?;
        let name = out
            .file_name()
            .with_context(|| format!("{}: not a folder name", out.display()))?
            .to_string_lossy()
            .into_owned();
        let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
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
        replace_dir(&self.tmp, &self.out).with_context(|| {
            format!("{}: cannot move the export into place", self.out.display())
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// One file written under a hidden temporary name beside `dest`; [`StagedFile::commit`] flushes
/// and syncs it, renames it over `dest` and syncs the folder, so neither a crash part-way nor a
/// power cut after the rename leaves a half or empty file at `dest`. Dropped uncommitted, the
/// temporary file is removed.
pub struct StagedFile {
    tmp: PathBuf,
    dest: PathBuf,
    w: Option<std::io::BufWriter<std::fs::File>>,
}

impl StagedFile {
    pub fn create(dest: &Path) -> std::io::Result<Self> {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
        let f = std::fs::File::create(&tmp)?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            w: Some(std::io::BufWriter::new(f)),
        })
    }

    pub fn writer(&mut self) -> &mut std::io::BufWriter<std::fs::File> {
        self.w
            .as_mut()
            .expect("a StagedFile is written only before commit")
    }

    pub fn commit(mut self) -> std::io::Result<()> {
        use std::io::Write;
        let mut w = self.w.take().expect("committed once");
        w.flush()?;
        w.get_ref().sync_all()?;
        drop(w);
        std::fs::rename(&self.tmp, &self.dest)?;
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if self.w.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
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
}
