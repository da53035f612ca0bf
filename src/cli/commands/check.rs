//! `check-config`: the configuration, the files it names and the store, every problem by key.

use super::*;

pub(crate) fn check_config(path: &Path) -> Done {
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        // Key-file problems belong in the same report as the others.
        Err(ConfigError::Invalid { path, mut problems }) => {
            problems.extend(Config::key_file_problems(&path));
            return Err(ConfigError::Invalid { path, problems }.into());
        }
        Err(e) => return Err(e.into()),
    };
    refuse_foreign_store(&cfg)?;
    let (mut problems, mut warnings) = cfg.check_vendor_key();
    warnings.extend(cfg.warnings.iter().cloned());
    let (p, w) = cfg.check_store_key();
    problems.extend(p);
    warnings.extend(w);
    let (p, w) = cfg.check_webhook_secrets();
    problems.extend(p);
    warnings.extend(w);
    if let crate::config::ApiListen::Tcp(_) = &cfg.api.listen {
        if let Err(e) = crate::api::serve::load_token(&cfg.api) {
            problems.push(Problem {
                key: "api.token_file".into(),
                message: e.to_string(),
            });
        }
        if let (Some(cert), Some(key)) = (&cfg.api.tls_cert_file, &cfg.api.tls_key_file) {
            if let Err(e) = crate::api::serve::check_tls(cert, key) {
                problems.push(Problem {
                    key: "api.tls_cert_file".into(),
                    message: e.to_string(),
                });
            }
        }
    }
    match check_store(&cfg) {
        Ok(w) => warnings.extend(w),
        Err(p) => problems.push(p),
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: cfg.source.clone(),
            problems,
        }
        .into());
    }
    let next = cfg
        .schedule
        .parsed
        .next_after(crate::time::now_ms())
        .ok()
        .map(crate::time::format_ms)
        .unwrap_or_else(|| "unknown".into());
    let g = &cfg.gradient.client;
    println!("configuration OK: {}", cfg.source.display());
    println!(
        "  gradient: {} ({} req/s, {} in flight, timeout {}s, {} attempts)",
        g.base_url,
        g.requests_per_second,
        g.max_in_flight,
        g.request_timeout.as_secs(),
        g.max_attempts
    );
    println!("  vendor key: {}", cfg.vendor_key_path().display());
    println!("  store: {}", cfg.store.path.display());
    println!("  store key: {}", cfg.store_key_path().display());
    println!("  control API: {}", cfg.api.listen);
    println!(
        "  schedule: {} at \"{}\" {} (catch-up {}); next run {}",
        cfg.schedule.cadence.as_str(),
        cfg.schedule.cron,
        cfg.schedule.timezone,
        if cfg.schedule.catch_up { "on" } else { "off" },
        next
    );
    let names: Vec<String> = cfg
        .services
        .iter()
        .map(|s| format!("{} ({}, {})", s.name, s.module, s.unit.as_str()))
        .collect();
    println!("  services: {}", names.join("; "));
    Ok(())
}

/// Checks that the store opens (an existing file) or can be created (a missing one, without
/// creating it), and that its tokens were sealed with the configured store key; warns when an
/// existing store is readable by others or holds future-dated history.
pub(crate) fn check_store(cfg: &Config) -> Result<Vec<Problem>, Problem> {
    let path = cfg.store.path.as_path();
    let problem = |message: String| Problem {
        key: "store.path".into(),
        message,
    };
    if path.exists() {
        let mut store = crate::store::Store::open(path, std::time::Duration::from_secs(5))
            .map_err(|e| problem(e.to_string()))?;
        // A check never makes a key: only one that exists is held against the store's tokens.
        let key = match cfg.store_key_path().exists() {
            true => cfg.load_store_key().ok(),
            false => None,
        };
        if let Some(key) = key {
            store.set_key(Some(Arc::new(crate::store::key::StoreKey::new(key))));
            if let Err(e) = store.check_key() {
                return Err(Problem {
                    key: "store.key_file".into(),
                    message: e.to_string(),
                });
            }
        }
        let mut warnings: Vec<Problem> =
            loose_permissions(path, "store.path").into_iter().collect();
        let future = store
            .future_dated(crate::time::now_ms())
            .map_err(|e| problem(e.to_string()))?;
        if future > 0 {
            warnings.push(problem(format!(
                "{future} inventory records are dated in the future (accepted by an older version); run `gradient-connector store repair-future`"
            )));
        }
        let channels = store.channel_ids().map_err(|e| problem(e.to_string()))?;
        for c in store.connectors().map_err(|e| problem(e.to_string()))? {
            if let Some(w) = crate::status::channel_warning(&c.id, &channels) {
                warnings.push(Problem {
                    key: format!("connector {}", c.id),
                    message: w,
                });
            }
        }
        return Ok(warnings);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(problem(format!(
            "the directory {} does not exist; create it (systemd's StateDirectory= does)",
            dir.display()
        )));
    }
    let probe = dir.join(format!(".gradient-connector-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(Vec::new())
        }
        Err(e) => Err(problem(format!(
            "cannot create the store in {}: {e}",
            dir.display()
        ))),
    }
}
