//! The backup engine. The file names tell the story of a backup, in order:
//! [`lock`] → [`store`] (leftovers) → [`space`] → [`snapshot`] (with [`integrity`]: DuckDB's
//! block checksums, checked as the copy passes) → [`verify`] → [`manifest`] and
//! [`store`] (publication, `latest`) → [`retention`]; [`backup`] runs them in that order.
//! [`restore`] is the way back. [`identity`] decides, for every command, which database it works
//! for and which backups are that database's. Policy ([`retention`], [`space::decide`],
//! [`restore::plan`]) is pure; the I/O sits in the steps that apply it.

pub mod backup;
pub mod identity;
pub mod integrity;
pub mod lease;
pub mod lock;
pub mod manifest;
pub mod restore;
pub mod retention;
pub mod snapshot;
pub mod space;
pub mod store;
pub mod verify;
