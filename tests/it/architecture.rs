//! The dependency rules of ARCHITECTURE.md, checked against the source: every `crate::X` that a
//! module of `src/` names must be allowed by the table between `<!-- layers:start -->` and
//! `<!-- layers:end -->`, every module must have a row, and the allowed graph must have no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rules() -> BTreeMap<String, BTreeSet<String>> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    let start = doc
        .find("<!-- layers:start -->")
        .expect("layers:start marker");
    let end = doc.find("<!-- layers:end -->").expect("layers:end marker");
    let mut out = BTreeMap::new();
    for line in doc[start..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let uses: BTreeSet<String> = cells[2]
            .split(',')
            .map(|c| c.trim().trim_matches('`').to_string())
            .filter(|c| !c.is_empty() && c != "—")
            .collect();
        out.insert(name, uses);
    }
    out
}

/// (module, file, used module) for every `crate::X` in `src/`.
fn uses() -> Vec<(String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().to_string();
            let module = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            if ["lib", "main", "bin"].contains(&module.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for (i, _) in text.match_indices("crate::") {
                let used: String = text[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !used.is_empty() && used != module {
                    out.push((module.clone(), rel.clone(), used));
                }
            }
        }
    }
    out
}

#[test]
fn every_module_uses_only_what_architecture_md_allows() {
    let rules = rules();
    let mut broken = BTreeSet::new();
    for (module, file, used) in uses() {
        match rules.get(&module) {
            None => {
                broken.insert(format!(
                    "{module} has no row in ARCHITECTURE.md's dependency table"
                ));
            }
            Some(allowed) if !allowed.contains(&used) => {
                broken.insert(format!(
                    "src/{file}: `{module}` uses `{used}`, which ARCHITECTURE.md does not allow"
                ));
            }
            Some(_) => {}
        }
    }
    assert!(
        broken.is_empty(),
        "dependency rules broken:\n{}",
        broken.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_allowed_dependency_graph_has_no_cycle() {
    let rules = rules();
    assert!(rules.len() >= 12, "the table lists every module: {rules:?}");
    // Kahn's algorithm: repeatedly remove modules whose every dependency is removed.
    let mut left = rules.clone();
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !left.contains_key(d)))
            .map(|(m, _)| m.clone())
            .collect();
        assert!(
            !ready.is_empty(),
            "a cycle among: {:?}",
            left.keys().collect::<Vec<_>>()
        );
        for m in ready {
            left.remove(&m);
        }
    }
    for deps in rules.values() {
        for d in deps {
            assert!(
                rules.contains_key(d),
                "`{d}` is used in a rule but has no row"
            );
        }
    }
}
