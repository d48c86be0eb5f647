//! The engine: everything ducksafe does to a database and its backups, below the commands.
//!
//! The file names tell the story of a backup, in order: [`database`] (which database, is it
//! one) → [`lock`] and [`folders`] (the backup directory, private) → [`identity`] (is it this
//! database's) → [`lease`] (no other guarded run) → [`store`] (leftovers) and [`journal`] (an
//! interrupted restore) → [`space`] → [`snapshot`] (with [`integrity`]: DuckDB's block
//! checksums, checked as the copy passes) → [`verify`] → [`manifest`] and [`store`]
//! (publication, `latest`) → [`incremental`] (with `BACKUP_STORAGE: incremental`, the previous
//! backup converted into [`blockstore`] packs) → [`retention`]; [`backup`] runs them in that
//! order.
//!
//! [`restore`] is the way back: [`staging`] (the staged copy), [`quarantine`] (where the
//! replaced files go) and [`journal`] (the intent that makes it crash-safe).
//! [`table_restore`] puts some tables back into the live database in one DuckDB transaction,
//! after an undo backup taken by [`backup`]. [`shell`] builds
//! the lines people run by hand. Policy ([`retention`], [`space::decide`], [`restore::plan`],
//! [`shell`]) is pure; the I/O sits in the steps that apply it.
//!
//! Invariant: no module here imports one that imports it back (a test reads the `use` lines).

pub mod backup;
pub mod blockstore;
pub mod database;
pub mod diff;
pub mod folders;
pub mod identity;
pub mod incremental;
pub mod integrity;
pub mod journal;
pub mod lease;
pub mod lock;
pub mod manifest;
pub mod quarantine;
pub mod restore;
pub mod retention;
pub mod shell;
pub mod snapshot;
pub mod space;
pub mod staging;
pub mod store;
pub mod table_restore;
pub mod verify;

use crate::config::Settings;

/// What every response about this database says first, whatever the command: an interrupted
/// restore (with the ways out), a marker whose journal cannot be read, and a folder of
/// ducksafe's that is open to group or others. Reads only.
pub fn standing_warnings(settings: &Settings) -> Vec<String> {
    journal::pending(settings)
        .iter()
        .map(journal::Pending::line)
        .chain(standing_remarks(settings))
        .collect()
}

/// [`standing_warnings`] but the interrupted restores, for a report that lists those itself
/// (`restore --dry-run`): a marker in trouble and ducksafe's folders left open. Reads only.
pub fn standing_remarks(settings: &Settings) -> Vec<String> {
    journal::marker_trouble(settings)
        .into_iter()
        .chain(loose_folders(settings))
        .collect()
}

/// ducksafe's folders of this database left open to group or others (the backup directory,
/// the quarantine root), as [`folders::loose`] says them. Reads only.
pub fn loose_folders(settings: &Settings) -> Vec<String> {
    folders::loose(&settings.backup_dir)
        .into_iter()
        .chain(folders::loose(&quarantine::root(settings)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// The engine modules another engine module's source names, through `super::NAME` or
    /// `crate::engine::NAME` (in a `use` line or inline), comments and test modules left out.
    fn names_used(src: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
        let code: String = src
            .lines()
            .take_while(|l| l.trim() != "#[cfg(test)]")
            .map(|l| l.find("//").map_or(l, |at| &l[..at]))
            .collect::<Vec<_>>()
            .join("\n");
        let mut found = BTreeSet::new();
        for prefix in ["super::", "crate::engine::"] {
            for (at, _) in code.match_indices(prefix) {
                let rest = &code[at + prefix.len()..];
                let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                    // `use super::{a, b::{c, d}, e}`: the first segment of each top-level path.
                    let mut depth = 0;
                    let end = group
                        .char_indices()
                        .find(|&(_, c)| {
                            match c {
                                '{' => depth += 1,
                                '}' if depth == 0 => return true,
                                '}' => depth -= 1,
                                _ => {}
                            }
                            false
                        })
                        .map_or(group.len(), |(i, _)| i);
                    let mut depth = 0;
                    let mut starts = vec![0];
                    for (i, c) in group[..end].char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            ',' if depth == 0 => starts.push(i + 1),
                            _ => {}
                        }
                    }
                    starts.iter().map(|&s| &group[s..end]).collect()
                } else {
                    vec![rest]
                };
                for n in names {
                    let ident: String = n
                        .trim_start()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if modules.contains(&ident) {
                        found.insert(ident);
                    }
                }
            }
        }
        found
    }

    /// A cycle in `graph`, as the path that closes it (`a → b → a`), if there is one.
    fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            node: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|n| n == node) {
                let mut c = path[at..].to_vec();
                c.push(node.to_owned());
                return Some(c);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_owned());
            for next in graph.get(node).into_iter().flatten() {
                if let Some(c) = visit(next, graph, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(node.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        graph
            .keys()
            .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
    }

    /// Every engine module and the engine modules it imports, read from `src/engine/*.rs`.
    fn engine_graph() -> BTreeMap<String, BTreeSet<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
        let sources: BTreeMap<String, String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .filter(|p| p.file_stem().is_some_and(|s| s != "mod"))
            .map(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        let modules: BTreeSet<String> = sources.keys().cloned().collect();
        sources
            .iter()
            .map(|(name, src)| {
                let mut used = names_used(src, &modules);
                used.remove(name);
                (name.clone(), used)
            })
            .collect()
    }

    #[test]
    fn no_engine_module_imports_one_that_imports_it_back() {
        let graph = engine_graph();
        assert!(
            graph.len() > 10,
            "the engine's files were not read: {graph:?}"
        );
        // The reading is right: a few imports that are known to be there are seen.
        for (from, to) in [
            ("backup", "journal"),
            ("restore", "staging"),
            ("store", "database"),
        ] {
            assert!(
                graph[from].contains(to),
                "{from} → {to} not seen: {graph:?}"
            );
        }
        if let Some(c) = cycle(&graph) {
            panic!("import cycle in src/engine: {}", c.join(" → "));
        }
    }

    #[test]
    fn the_import_reader_sees_groups_inline_paths_and_not_comments() {
        let modules: BTreeSet<String> = ["a", "b", "c", "d", "e"].map(str::to_owned).into();
        let src = "use super::{a, b::{X, Y}};\nuse crate::engine::c::Z;\n// super::d\nfn f() { super::e::g() }\n#[cfg(test)]\nmod tests { use super::d; }\n";
        let got: Vec<String> = names_used(src, &modules).into_iter().collect();
        assert_eq!(got, ["a", "b", "c", "e"]);
        let graph: BTreeMap<String, BTreeSet<String>> = [
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec![]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(cycle(&graph).unwrap().join(" → "), "a → b → c → a");
    }
}
