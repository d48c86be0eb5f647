//! ducksafe's own folders: the backup directory, the quarantine root and the folders restores
//! make in it. They hold compensation data, so they are private, real directories of this user.
//!
//! Invariants:
//! - A symlink, a system folder, a world-writable folder or one owned by another user is refused,
//!   never used (the caller's error names the configuration key).
//! - A folder ducksafe creates is `0700`. One it finds open to group or others (a
//!   `mkdir -p backups` before ducksafe first ran) is tightened to `0700` by the command that
//!   writes there ([`tighten`]), with a note saying so; one it may not change (a read-only
//!   filesystem, a `chmod` refused) is said in every response ([`loose`]). Reading commands and
//!   dry runs never change a mode.
//! - A shared system folder is never `chmod`-ed: it is refused before.

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::files;

/// The mode of every folder ducksafe keeps private data in.
const PRIVATE: u32 = files::PRIVATE_DIR_MODE;
/// The permission bits of group and others.
const GROUP_AND_OTHERS: u32 = 0o077;

/// Whether a folder of `mode` is open to group or others.
fn open_to_others(mode: u32) -> bool {
    mode & GROUP_AND_OTHERS != 0
}

/// Which of ducksafe's folders: decides the error (and the configuration key it names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `BACKUP_DIR`.
    BackupDir,
    /// `QUARANTINE_DIR`: the quarantine root, or a folder a restore creates in it.
    Quarantine,
}

impl Kind {
    /// The refusal of `dir` for `why`.
    pub fn refuse(self, dir: &Path, why: String) -> Error {
        match self {
            Kind::BackupDir => Error::BackupDirUnsafe {
                dir: dir.to_path_buf(),
                why,
            },
            Kind::Quarantine => Error::UnsafeFolder {
                key: "QUARANTINE_DIR",
                what: "quarantine folder",
                dir: dir.to_path_buf(),
                why,
            },
        }
    }
}

/// Checks a folder that exists without changing anything: a real directory (not a symlink),
/// not a system folder, private to this user. `Ok` when it does not exist (or cannot be
/// reached).
pub fn check(dir: &Path, kind: Kind) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(kind.refuse(
            dir,
            format!(
                "it is a symlink (to `{}`); ducksafe never follows links for its own folders",
                fs::read_link(dir).unwrap_or_default().display()
            ),
        )),
        Ok(m) => {
            files::unsafe_folder_reason(dir, &m).map_or(Ok(()), |why| Err(kind.refuse(dir, why)))
        }
        // Not there (or not reachable: what holds it is checked by its own command).
        Err(_) => Ok(()),
    }
}

/// Makes sure `dir` is a private directory of this user, creating it (`0700`) when missing and
/// tightening it when it is open to others. Returns the note of a tightening (made or failed).
pub fn ensure(dir: &Path, kind: Kind) -> Result<Option<String>> {
    match fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match files::create_private_dir(dir) {
                Ok(()) => return Ok(None),
                // Created meanwhile by someone else: checked like any folder found there.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create", dir, e)),
            }
        }
        Err(e) => return Err(Error::io("stat", dir, e)),
    }
    check(dir, kind)?;
    Ok(tighten(dir))
}

/// Tightens a folder open to group or others to `0700`: the note that says so, or why it could
/// not be done. `None` when it was private already (or is not there). Call only for a folder
/// [`check`] accepted, from a command that writes there.
pub fn tighten(dir: &Path) -> Option<String> {
    tighten_with(dir, &|d, mode| files::set_dir_mode(d, mode))
}

fn tighten_with(dir: &Path, chmod: &dyn Fn(&Path, u32) -> std::io::Result<()>) -> Option<String> {
    let meta = fs::symlink_metadata(dir).ok()?;
    let mode = files::mode_of(&meta);
    if !meta.is_dir() || !open_to_others(mode) {
        return None;
    }
    let tried =
        may_tighten(dir, &meta).and_then(|()| chmod(dir, PRIVATE).map_err(|e| e.to_string()));
    Some(match tried {
        Ok(()) => format!(
            "tightened `{}` from {mode:04o} to {PRIVATE:04o}: it holds compensation data",
            dir.display()
        ),
        Err(why) => cannot(dir, mode, &why),
    })
}

/// What every response says of a folder open to group or others (nothing for a private one,
/// or one that is not there): it is tightened by the next backup, or, when ducksafe may not
/// change it, what to do. Changes nothing.
pub fn loose(dir: &Path) -> Option<String> {
    let meta = fs::symlink_metadata(dir).ok()?;
    let mode = files::mode_of(&meta);
    if !meta.is_dir() || !open_to_others(mode) || files::unsafe_folder_reason(dir, &meta).is_some()
    {
        return None;
    }
    Some(match may_tighten(dir, &meta) {
        Ok(()) => format!(
            "`{}` is {mode:04o}, open to group and others: it holds compensation data, and the next backup makes it {PRIVATE:04o}",
            dir.display()
        ),
        Err(why) => cannot(dir, mode, &why),
    })
}

/// Whether this process may change the folder's mode: it owns it, on a writable filesystem.
fn may_tighten(dir: &Path, meta: &fs::Metadata) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != files::euid() {
        return Err(format!("it is owned by uid {}", meta.uid()));
    }
    if files::is_read_only_fs(dir) {
        return Err("it is on a read-only filesystem".into());
    }
    Ok(())
}

fn cannot(dir: &Path, mode: u32, why: &str) -> String {
    // No chmod works on a read-only filesystem: the advice starts with the remount.
    let fix = if files::is_read_only_fs(dir) {
        "no chmod works on a read-only filesystem: remount it read-write (`mount -o remount,rw MOUNTPOINT`), then run"
    } else {
        "run"
    };
    format!(
        "`{}` is {mode:04o}, open to group and others, and ducksafe cannot make it {PRIVATE:04o} ({why}): it holds compensation data; {fix} `chmod 700 {}`",
        dir.display(),
        super::shell::quote(dir)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn folder(mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("backups");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        (t, dir)
    }

    fn mode(dir: &Path) -> u32 {
        files::mode_of(&fs::metadata(dir).unwrap())
    }

    #[test]
    fn a_folder_open_to_others_is_tightened_with_a_note() {
        let (_t, dir) = folder(0o755);
        let note = tighten(&dir).unwrap();
        assert!(note.starts_with("tightened `"), "{note}");
        assert!(
            note.ends_with("from 0755 to 0700: it holds compensation data"),
            "{note}"
        );
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(tighten(&dir), None, "once private, nothing more to say");
        assert_eq!(loose(&dir), None);
    }

    #[test]
    fn a_folder_that_cannot_be_tightened_is_said_and_left_alone() {
        let (_t, dir) = folder(0o750);
        let refused = |_: &Path, _: u32| Err(std::io::Error::from_raw_os_error(libc::EPERM));
        let note = tighten_with(&dir, &refused).unwrap();
        assert!(
            note.contains("is 0750, open to group and others, and ducksafe cannot make it 0700")
                && note.contains("chmod 700"),
            "{note}"
        );
        assert_eq!(mode(&dir), 0o750);
        // Until it is tightened, every response says it (a reading command changes nothing).
        let said = loose(&dir).unwrap();
        assert!(said.contains("is 0750"), "{said}");
        assert_eq!(mode(&dir), 0o750);
    }

    #[test]
    fn a_private_folder_is_left_as_it_is() {
        let (_t, dir) = folder(0o700);
        assert_eq!(tighten(&dir), None);
        assert_eq!(loose(&dir), None);
        let (_t, missing) = folder(0o700);
        assert_eq!(ensure(&missing.join("new"), Kind::BackupDir).unwrap(), None);
        assert_eq!(mode(&missing.join("new")), 0o700);
    }
}
