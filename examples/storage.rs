//! The storage benchmark (work in progress).
#![allow(clippy::unwrap_used)]
use std::path::Path;
use std::time::Instant;

use ducksafe::workload::{self, Shape};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--generate") {
        let dir = Path::new(&args[2]);
        let shape = Shape::ALL
            .into_iter()
            .find(|s| s.name() == args[3])
            .unwrap();
        let scale: u32 = args[4].parse().unwrap();
        let runs: u32 = args[5].parse().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let db = dir.join("work.duckdb");
        let (emp, ev) = (9_016 * scale, 42_331 * scale);
        let t = Instant::now();
        ducksafe::demo::create_sized(&db, emp, ev).unwrap();
        eprintln!(
            "base {} bytes in {:.1}s",
            std::fs::metadata(&db).unwrap().len(),
            t.elapsed().as_secs_f64()
        );
        for k in 1..=runs {
            let t = Instant::now();
            workload::run(&db, shape, k, emp, ev).unwrap();
            let out = dir.join(format!("run{k}.duckdb"));
            std::fs::copy(&db, &out).unwrap();
            eprintln!(
                "run {k}: {} bytes in {:.1}s",
                std::fs::metadata(&out).unwrap().len(),
                t.elapsed().as_secs_f64()
            );
        }
    }
}
