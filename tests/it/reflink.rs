//! On a filesystem with reflinks (a loop-mounted XFS image), a backup is a clone of the
//! database: still verified end to end, and still independent of the database once the
//! database changes. Needs root (mount); CI runs as root, elsewhere it skips and says why.

use std::path::{Path, PathBuf};

use crate::support::mount::Mount;
use crate::support::{self, bin, fingerprints, sha256};
use ducksafe::duck::{Db, Limits};
use ducksafe::engine::manifest::Manifest;
use ducksafe::files::CopyMethod;

/// A loop-mounted XFS image, unmounted on drop (before its folder goes: the fields drop in
/// order).
struct Mounted {
    mount: Mount,
    _tmp: tempfile::TempDir,
}

/// Mounts a fresh 512 MiB XFS image with reflinks; `None` (after saying why) when this
/// machine cannot. Under CI a missing capability is a failure, not a skip.
fn mount_xfs() -> Option<Mounted> {
    let why = if ducksafe::files::euid() != 0 {
        Some("mounting a loop device needs root (CI runs as root)")
    } else if support::command("mkfs.xfs").arg("-V").output().is_err() {
        Some("`mkfs.xfs` not found (Debian package xfsprogs; .ci/run installs it)")
    } else {
        None
    };
    if let Some(why) = why {
        support::skip("the XFS reflink test", why);
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("xfs.img");
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let ok = support::command("mkfs.xfs")
        .args(["-q", "-m", "reflink=1"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(ok.success(), "mkfs.xfs");
    let mount = Mount::image(&img, &dir).unwrap();
    Some(Mounted { mount, _tmp: tmp })
}

fn shared_extents(path: &Path) -> bool {
    let out = support::command("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("shared")
}

#[test]
fn a_reflinked_backup_is_verified_and_independent_of_the_source() {
    let Some(m) = mount_xfs() else { return };
    let dir = m.mount.path();
    let db = dir.join("simulation.duckdb");
    ducksafe::demo::create_sized(&db, 2_000, 20_000).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        "DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\n",
    )
    .unwrap();
    let out = bin()
        .current_dir(dir)
        .args(["--config", "config.yaml", "backup", "--json"])
        .output()
        .unwrap();
    support::assert_ok(&out);
    let r: ducksafe::protocol::Response = serde_json::from_slice(&out.stdout).unwrap();
    let b = r.backup.unwrap();
    let backup = PathBuf::from(&b.path);
    let manifest = Manifest::read(&dir.join(format!("backups/{}.manifest.json", b.id))).unwrap();
    assert_eq!(manifest.source.copy_method, Some(CopyMethod::Reflink));
    assert!(
        shared_extents(&backup),
        "the backup shares the database's blocks"
    );
    assert_eq!(
        b.verification,
        [
            "size",
            "sha256",
            "block_checksums",
            "open",
            "row_counts",
            "fingerprints"
        ]
    );
    let before = fingerprints(&backup);
    assert_eq!(before, fingerprints(&db));

    // The database changes (a run writes it, then checkpoints): the clone must not follow.
    let d = Db::open_read_write(&db, &Limits::default()).unwrap();
    d.execute_batch("UPDATE employees SET current_compensation = 0; CHECKPOINT;")
        .unwrap();
    d.close().unwrap();
    assert_ne!(fingerprints(&db), before);
    assert_eq!(fingerprints(&backup), before);
    assert_eq!(sha256(&backup), b.sha256);
    let out = bin()
        .current_dir(dir)
        .args(["--config", "config.yaml", "verify", "--all"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
