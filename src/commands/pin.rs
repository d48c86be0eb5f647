//! `ducksafe pin ID` / `ducksafe unpin ID`: a pinned backup is never rotated away and does not
//! count against `BACKUP_KEEP_LAST`.

use std::io::{self, Write};

use serde::Serialize;

use super::{Access, Global};
use crate::cli::PinArgs;
use crate::output::{self, Report};

#[derive(Serialize)]
struct Pinned {
    id: String,
    pinned: bool,
}

impl Report for Pinned {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.pinned {
            writeln!(out, "pinned `{}`: rotation will never delete it", self.id)
        } else {
            writeln!(out, "unpinned `{}`: rotation may delete it again", self.id)
        }
    }

    fn audit(&self) -> crate::audit::Facts {
        crate::audit::Facts::done(
            if self.pinned { "pinned" } else { "unpinned" },
            Some(&self.id),
            None,
        )
    }
}

pub fn run(g: &Global, a: &PinArgs, pin: bool) -> i32 {
    let pinned = (|| {
        let settings = g.settings()?;
        super::warn_pending(&settings);
        let opened = super::open_store(&settings, Access::Change { dry_run: false })?;
        let mut entry = opened.store.resolve(&a.id)?;
        entry.manifest.pinned = pin;
        opened.store.rewrite_manifest(&entry.manifest)?;
        Ok::<_, crate::error::Error>(Pinned {
            id: entry.id,
            pinned: pin,
        })
    })();
    output::finish(g.json, pinned.map_err(Into::into))
}
