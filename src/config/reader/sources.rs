//! `[[source]]` entries: where the inventory is pulled from — a PostgreSQL database (a URL file and
//! a query file) or a command — how its records apply, and how long a pull may take.

use std::collections::HashSet;
use std::time::Duration;

use super::super::file::{Entries, SourceKeys};

use super::super::keys::SOURCE;
use super::super::{SourceConfig, SourceFrom};
use super::Reader;

impl Reader<'_> {
    pub(in crate::config) fn sources(
        &mut self,
        raw: Entries<SourceKeys>,
    ) -> Option<Vec<SourceConfig>> {
        let (entries, mut ok) = self.entries(SOURCE, raw)?;
        let mut out = Vec::new();
        let mut names = HashSet::new();
        for (sec, s) in entries {
            let mut late: Vec<(String, String)> = Vec::new();
            let source = self.finish(s, |s| {
                let name = s.str("name")?;
                let kind = s.str("kind")?;
                let url_file = s.opt_path("url_file")?;
                let query_file = s.opt_path("query_file")?;
                let command = s.opt_words("command")?;
                let from = match kind.as_str() {
                    "postgres" => match (url_file, query_file) {
                        (Some(url_file), Some(query_file)) => SourceFrom::Postgres {
                            url_file,
                            query_file,
                        },
                        (u, _) => {
                            let missing = if u.is_none() { "url_file" } else { "query_file" };
                            late.push((
                                format!("{sec}.{missing}"),
                                "a postgres source needs url_file (the libpq URL) and query_file (the SQL statement)".into(),
                            ));
                            return None;
                        }
                    },
                    _ => match command {
                        Some(argv) => SourceFrom::Command { argv },
                        None => {
                            late.push((
                                format!("{sec}.command"),
                                "a command source needs command = [\"/path/to/program\", \"arg\", …]".into(),
                            ));
                            return None;
                        }
                    },
                };
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    late.push((
                        format!("{sec}.name"),
                        format!("{name:?}: use letters, digits, `-` and `_` (it names a systemd credential and a metric label)"),
                    ));
                    return None;
                }
                Some(SourceConfig {
                    snapshot: s.str("mode")? == "snapshot",
                    timeout: Duration::from_secs(s.num("timeout_secs")?),
                    from,
                    name,
                })
            });
            for (key, message) in late {
                self.problem(key, message);
            }
            match source {
                Some(src) if !names.insert(src.name.clone()) => {
                    self.problem(
                        format!("{sec}.name"),
                        format!("duplicate source name {:?}: each source once", src.name),
                    );
                    ok = false;
                }
                Some(src) => out.push(src),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}
