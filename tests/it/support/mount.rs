//! Mounts made for a test: a size-limited tmpfs, a folder made read-only in place, a loop-mounted
//! image, each undone on drop. Mounting needs root: [`mounted`] turns a failure into a counted
//! skip (a failure under CI, which runs as root). Every `mount` and `umount` goes through
//! [`command`], as every child of this binary does.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{command, skip};

/// A mount at `dir`, unmounted on drop.
pub struct Mount {
    dir: PathBuf,
}

/// Runs `mount ARGS AT...`; an error says what failed.
fn mount(args: &[&str], at: &[&Path]) -> Result<(), String> {
    let out = command("mount")
        .args(args)
        .args(at)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Mount {
    /// A tmpfs of `size` bytes at `dir`, its root folder with `mode`.
    pub fn tmpfs(dir: &Path, size: u64, mode: u32) -> Result<Mount, String> {
        let options = format!("size={size},mode={mode:04o}");
        mount(&["-t", "tmpfs", "-o", &options, "tmpfs"], &[dir])?;
        Ok(Mount::at(dir))
    }

    /// `dir` becomes read-only in place (a bind mount keeps its device number, as a remount of
    /// the filesystem would).
    pub fn read_only(dir: &Path) -> Result<Mount, String> {
        mount(&["--bind"], &[dir, dir])?;
        let m = Mount::at(dir);
        mount(&["-o", "remount,ro,bind"], &[dir])?;
        Ok(m)
    }

    /// The filesystem image `img` loop-mounted at `dir`.
    pub fn image(img: &Path, dir: &Path) -> Result<Mount, String> {
        mount(&["-o", "loop"], &[img, dir])?;
        Ok(Mount::at(dir))
    }

    /// The whole filesystem mounted here becomes read-only (read-only media).
    pub fn remount_read_only(&self) -> Result<(), String> {
        mount(&["-o", "remount,ro"], &[&self.dir])
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn at(dir: &Path) -> Mount {
        Mount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let done = command("umount")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            // Still busy (a process being torn down): detach it now, the kernel frees it (and a
            // loop device) later.
            let _ = command("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Mounting needs root: CI runs as root and must run these (a failure there fails the test);
/// elsewhere they are skipped through [`skip`], which counts them.
pub fn mounted(case: &str, m: Result<Mount, String>) -> Option<Mount> {
    match m {
        Ok(m) => Some(m),
        Err(e) => {
            let who = if ducksafe::files::euid() == 0 {
                "root, but mounting is not allowed here"
            } else {
                "not root"
            };
            skip(case, &format!("{who} ({e}); CI runs it as root"));
            None
        }
    }
}
