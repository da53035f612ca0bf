//! The README's configuration reference is the key table's own output: it cannot drift from the keys
//! the daemon reads.

use gradient_connector::config::{reference_table, Fallback, KEYS};

const START: &str = "<!-- config-table:start -->\n";
const END: &str = "<!-- config-table:end -->";

fn readme() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text between the markers in the README's "## Configuration" section.
fn readme_table(readme: &str) -> Option<&str> {
    let section = readme.split("\n## Configuration\n").nth(1)?;
    let section = section.split("\n## ").next()?;
    let after = section.split_once(START)?.1;
    Some(after.split_once(END)?.0)
}

#[test]
fn readme_configuration_table_is_the_generated_one() {
    let expected = reference_table();
    let readme = readme();
    let found = readme_table(&readme);
    assert!(
        found == Some(expected.as_str()),
        "README.md's \"## Configuration\" section must hold the generated key table verbatim \
         between `{}` and `{END}`. Replace the lines between the markers with:\n\n{expected}",
        START.trim_end(),
    );
}

#[test]
fn the_table_has_one_row_per_declared_key() {
    let table = reference_table();
    let rows: Vec<&str> = table.lines().skip(2).collect();
    assert_eq!(rows.len(), KEYS.len());
    for (row, key) in rows.iter().zip(KEYS) {
        assert!(row.contains(key.name), "{row}");
        if let Fallback::Value(default) = key.default {
            assert!(row.contains(&format!("| `{default}` |")), "{row}");
        }
    }
}

#[test]
fn the_example_configuration_sets_every_section_key() {
    // config/gradient-connector.toml is the commented example: it shows every key that has a
    // default (the [[service]] keys with none are optional and shown commented out).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("config/gradient-connector.toml")).unwrap();
    for key in KEYS {
        assert!(
            example.contains(&format!("\n{} = ", key.name))
                || example.contains(&format!("\n# {} = ", key.name)),
            "config/gradient-connector.toml does not show {}.{}",
            key.section,
            key.name
        );
    }
}

/// The README's list of Gradient's categories and subcategories is the one the configuration
/// checks (`gradient::types`), so an error that points at it points at the truth.
#[test]
fn readme_service_categories_are_the_checked_ones() {
    use gradient_connector::gradient::types::{CATEGORIES, SUBCATEGORIES};
    let text = readme();
    let block = text
        .split("<!-- categories:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- categories:end -->").next())
        .expect("README.md has the categories block");
    let listed = |label: &str| -> Vec<String> {
        let line = block
            .lines()
            .find(|l| l.starts_with(&format!("- {label}: ")))
            .unwrap_or_else(|| panic!("a `- {label}:` line in {block}"));
        line.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(listed("category"), CATEGORIES);
    assert_eq!(listed("subcategory"), SUBCATEGORIES);
}
