#![allow(clippy::case_sensitive_file_extension_comparisons)]
//! The committed schemas equal the generated ones, and every shipped example validates.

use std::path::Path;

use ducksafe::schemas;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_schemas_equal_the_generated_ones() {
    for (name, file) in schemas::NAMES {
        let path = root().join("schemas").join(file);
        let generated = schemas::render(&schemas::by_name(name).unwrap());
        if std::env::var_os("DUCKSAFE_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `DUCKSAFE_BLESS=1 cargo test --test it schemas::`",
                path.display()
            )
        });
        assert_eq!(
            committed, generated,
            "{} drifted from the Rust types; run `DUCKSAFE_BLESS=1 cargo test --test it schemas::` and commit",
            path.display()
        );
    }
}

fn validator(file: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("schemas").join(file)).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

fn load(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    ducksafe::config::parse_text(&text, path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_example_validates_against_its_schema() {
    let config = validator("config.schema.json");
    let request = validator("hook-request.schema.json");
    let response = validator("hook-response.schema.json");
    let mut seen = 0;
    let mut stack = vec![root().join("examples")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_ascii_lowercase();
            let v = if name.ends_with(".request.json") {
                Some((&request, load(&p)))
            } else if name.ends_with(".response.json") {
                Some((&response, load(&p)))
            } else if name.starts_with("config")
                && (name.ends_with(".yaml") || name.ends_with(".json"))
            {
                Some((&config, load(&p)))
            } else {
                None
            };
            if let Some((validator, value)) = v {
                let errors: Vec<String> = validator
                    .iter_errors(&value)
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{}: {errors:?}", p.display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 5, "expected the shipped examples, found {seen}");
}

#[test]
fn the_config_init_writes_validates() {
    let v = ducksafe::config::parse_text(
        ducksafe::commands::init::CONFIG_TEMPLATE,
        Path::new("config.yaml"),
    )
    .unwrap();
    let errors: Vec<String> = validator("config.schema.json")
        .iter_errors(&v)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}
