//! The demo: a self-contained tour of the product on 127.0.0.1 — an in-process gradient-sim, a
//! temporary store and config, a realistic sample inventory (3 MSPs, 25 workspaces), connectors
//! added through the real code path, syncs through the real sync path, and a report of what
//! Gradient received. Nothing leaves the machine; nothing is left behind unless `--keep DIR`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::domain::{ConnectorState, Trigger};
use crate::sim::{Mapping, Sim, SimOptions, SimSnapshot};
use crate::sync::{RunControl, RunReport, RunRequest, SyncContext};
use serde_json::json;

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Setting up files failed.
    #[error("demo set-up failed: {0}")]
    Setup(#[source] std::io::Error),
    /// The demo's store key could not be written.
    #[error("demo set-up failed: {0}")]
    StoreKey(#[source] crate::config::keyfile::KeyFileError),
    /// The async runtime could not start.
    #[error("demo set-up failed: cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A step of the product failed.
    #[error("demo step {step:?} failed: {source}")]
    Step {
        /// Which step.
        step: &'static str,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

const VENDOR_KEY: &str = "demo-vendor-key";

struct Msp {
    id: &'static str,
    name: &'static str,
    customers: &'static [&'static str],
}

const MSPS: &[Msp] = &[
    Msp {
        id: "msp-northwind",
        name: "Northwind IT Services",
        customers: &[
            "Contoso Ltd",
            "Fabrikam Inc",
            "Adventure Works",
            "Tailspin Toys",
            "Wingtip Toys",
            "Litware Inc",
            "Proseware",
            "Lucerne Publishing",
            "Margie's Travel",
        ],
    },
    Msp {
        id: "msp-bluesky",
        name: "Blue Sky Managed Services",
        customers: &[
            "Alpine Ski House",
            "Coho Winery",
            "Fourth Coffee",
            "Graphic Design Institute",
            "Humongous Insurance",
            "Trey Research",
            "Woodgrove Bank",
            "VanArsdel Ltd",
        ],
    },
    Msp {
        id: "msp-harbor",
        name: "Harbor Tech Partners",
        customers: &[
            "Relecloud",
            "Northwind Traders",
            "Bellows College",
            "Best For You Organics",
            "City Power & Light",
            "Consolidated Messenger",
            "School of Fine Art",
            "Wide World Importers",
        ],
    },
];

/// The demo's services, as the configuration's `[[service]]` tables: endpoint and e-mail security,
/// and a backup service. (module, name, unit, category, subcategory, description)
const SERVICES: [[&str; 6]; 3] = [
    [
        "endpoint_security",
        "Endpoint Security",
        "devices",
        "security",
        "endpoint detection and response (EDR)",
        "Protected devices",
    ],
    [
        "email_security",
        "Email Security",
        "users",
        "security",
        "email security",
        "Protected mailboxes",
    ],
    [
        "cloud_backup",
        "Cloud Backup",
        "devices",
        "backup",
        "cloud backup",
        "Backed-up devices",
    ],
];

/// When the sample inventory's history starts.
const SINCE: &str = "2026-10-01T00:00:00Z";

const MODULES: [&str; 3] = ["endpoint_security", "email_security", "cloud_backup"];

fn slug(name: &str) -> String {
    name.chars()
        .filter_map(|c| {
            if c.is_ascii_alphanumeric() {
                Some(c.to_ascii_lowercase())
            } else if c == ' ' {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The sample inventory, as the import's JSON Lines: history from October 2026.
fn sample_inventory(rng: &mut fastrand::Rng) -> String {
    let mut lines: Vec<serde_json::Value> = Vec::new();
    for m in MSPS {
        lines.push(json!({"type": "channel", "id": m.id, "name": m.name}));
        for (i, c) in m.customers.iter().enumerate() {
            let ws = format!("{}-{}", &m.id[4..], slug(c));
            lines.push(
                json!({"type": "workspace", "id": ws, "channel": m.id, "name": c, "at": SINCE}),
            );
            for (k, module) in MODULES.iter().enumerate() {
                // Not every customer bought every module.
                if (i + k) % 4 == 3 {
                    continue;
                }
                lines.push(json!({"type": "module", "workspace": ws, "module": module, "enabled": true, "at": SINCE}));
            }
            let users = rng.usize(5..60);
            for u in 0..users {
                let protected = rng.u8(0..10) != 0;
                lines.push(json!({"type": "user", "workspace": ws, "id": format!("{ws}-u{u}"), "protected": protected, "at": SINCE}));
            }
            for d in 0..rng.usize(users / 2..users + 20) {
                let protected = rng.u8(0..8) != 0;
                lines.push(json!({"type": "device", "workspace": ws, "id": format!("{ws}-d{d}"), "protected": protected, "at": SINCE}));
            }
        }
    }
    jsonl(&lines)
}

/// Imports JSON Lines through the store's writer, as `import` does.
async fn import(
    store: &crate::store::StoreHandle,
    text: String,
) -> Result<crate::store::import::ImportSummary, crate::store::import::ImportError> {
    store
        .write(move |s| {
            Ok(crate::store::import::import(
                s,
                text.as_bytes(),
                crate::time::now_ms(),
            ))
        })
        .await?
}

/// Records as JSON Lines.
fn jsonl(records: &[serde_json::Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// The demo's configuration file: Gradient at `base_url`, files beside it, the API off.
fn config_text(base_url: &str) -> String {
    // Every value is ours (a loopback url, fixed words); JSON strings are valid TOML strings.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut text = format!(
        "[gradient]\nbase_url = {}\nvendor_api_key_file = \"vendor-api-key\"\nretry_initial_delay_ms = 20\n\n\
         [store]\npath = \"store.db\"\nkey_file = \"store-key\"\n\n\
         [schedule]\ncadence = \"daily\"\ncron = \"0 0 2 * * *\"\ntimezone = \"UTC\"\n\n\
         [log]\nlevel = \"off\"\n\n[api]\nlisten = \"\"\n",
        q(base_url)
    );
    for [module, name, unit, category, subcategory, description] in SERVICES {
        text.push_str(&format!(
            "\n[[service]]\nmodule = {}\nname = {}\ndescription = {}\nunit = {}\ncategory = {}\nsubcategory = {}\n",
            q(module),
            q(name),
            q(description),
            q(unit),
            q(category),
            q(subcategory)
        ));
    }
    text
}

fn step<T, E>(step: &'static str, r: Result<T, E>) -> Result<T, DemoError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    r.map_err(|e| DemoError::Step {
        step,
        source: Box::new(e),
    })
}

fn write_files(dir: &Path, base_url: &str) -> Result<PathBuf, DemoError> {
    use std::os::unix::fs::PermissionsExt;
    let setup = DemoError::Setup;
    std::fs::create_dir_all(dir).map_err(setup)?;
    let key = dir.join("vendor-api-key");
    std::fs::write(&key, VENDOR_KEY).map_err(setup)?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).map_err(setup)?;
    let store_key = dir.join("store-key");
    if !store_key.exists() {
        crate::config::keyfile::write_new_store_key(&store_key).map_err(DemoError::StoreKey)?;
    }
    let config = dir.join("gradient-connector.toml");
    std::fs::write(&config, config_text(base_url)).map_err(setup)?;
    Ok(config)
}

/// Runs the demo; prints the report to stdout.
pub fn run(keep: Option<&Path>) -> Result<(), DemoError> {
    let rt = crate::daemon::runtime().map_err(DemoError::Runtime)?;
    rt.block_on(tour(keep))
}

async fn sync_once(ctx: &SyncContext) -> Result<RunReport, DemoError> {
    let req = RunRequest {
        trigger: Trigger::Cli,
        connector: None,
        month: None,
        slot_at: None,
    };
    step(
        "sync",
        crate::sync::run(ctx, req, &RunControl::default()).await,
    )
}

/// The tour, step by step as it is printed (long on purpose: it reads top to bottom like the output).
#[expect(
    clippy::too_many_lines,
    reason = "the tour reads top to bottom like its output"
)]
async fn tour(keep: Option<&Path>) -> Result<(), DemoError> {
    let started = std::time::Instant::now();
    let temp;
    let dir: PathBuf = match keep {
        Some(d) => d.to_path_buf(),
        None => {
            temp = step("temporary directory", tempfile_dir())?;
            temp.0.clone()
        }
    };
    let sim = step(
        "start gradient-sim",
        Sim::start(SimOptions {
            vendor_key: VENDOR_KEY.into(),
            rate_limit_per_token: 0,
            port: 0,
        })
        .await,
    )?;
    println!("gradient-connector demo");
    println!("  Gradient stand-in (gradient-sim) on {}", sim.base_url());
    println!(
        "  working directory {}{}",
        dir.display(),
        if keep.is_some() {
            " (kept)"
        } else {
            " (removed at the end)"
        }
    );

    let config_path = write_files(&dir, &sim.base_url())?;
    let config = Arc::new(step("load config", Config::load(&config_path))?);
    crate::daemon::init_logging(&config.log);
    let mut rng = fastrand::Rng::with_seed(2026);
    let inventory = sample_inventory(&mut rng);
    let summary = {
        let loc = crate::sync::store_handle(&config);
        step("import", import(&loc, inventory).await)?
    };
    println!("\n1. Imported the vendor's inventory: {summary}");

    let ctx = step("client", SyncContext::new(config.clone()))?;
    for m in MSPS {
        let key = format!("partner-key-{}", m.id);
        sim.add_msp(m.id, m.name, &key);
        let token = secrecy::SecretString::from(key);
        let r = step(
            "connector add",
            ctx.lifecycle()
                .add(&m.id.into(), token, Default::default())
                .await,
        )?;
        println!(
            "2. {} pasted its Gradient partner token: verified, integration {}, {} accounts created",
            m.name, r.gradient_status, r.accounts_created
        );
    }
    // Harbor has mapped only some customers and services in its PSA so far.
    let harbor_accounts: Vec<String> = MSPS[2]
        .customers
        .iter()
        .take(5)
        .map(|c| format!("harbor-{}", slug(c)))
        .collect();

    let first = sync_once(&ctx).await?;
    let snap = sim.snapshot();
    let mapped_services: Vec<String> = snap.services.iter().take(2).map(|s| s.id.clone()).collect();
    sim.set_mapping(
        "msp-harbor",
        Mapping::Explicit {
            accounts: harbor_accounts,
            service_ids: mapped_services,
        },
    );
    println!("\n3. First sync: {}", first.summary());

    // Two customers switch a module off; Harbor's mapping is partial.
    let off = jsonl(&[
        json!({"type": "module", "workspace": "northwind-contoso-ltd", "module": "endpoint_security", "enabled": false}),
        json!({"type": "module", "workspace": "bluesky-coho-winery", "module": "email_security", "enabled": false}),
    ]);
    let loc = crate::sync::store_handle(&config);
    step("import", import(&loc, off).await)?;
    let second = sync_once(&ctx).await?;
    println!("4. Contoso switched Endpoint Security off, Coho Winery Email Security; Harbor mapped only part of its customers.");
    println!("   Second sync: {}", second.summary());
    print!("{}", render_received(&sim.snapshot(), &second, &config));

    sim.rotate_key("msp-bluesky", "partner-key-bluesky-NEW");
    let third = sync_once(&ctx).await?;
    println!("\n5. Blue Sky generated a new partner key in Gradient (the old one now gets 401).");
    println!("   Third sync: {}", third.summary());
    for c in &third.connectors {
        if c.state == Some(ConnectorState::TokenRejected) {
            println!(
                "   connector {}: token_rejected — nothing more is sent with the old token.",
                c.id
            );
            println!("   Heal it by pasting the new token:");
            println!(
                "     gradient-connector connector add {} --token-file new-token.txt",
                c.id
            );
        }
    }
    let heal = secrecy::SecretString::from("partner-key-bluesky-NEW".to_string());
    step(
        "connector add",
        ctx.lifecycle()
            .add(&"msp-bluesky".into(), heal, Default::default())
            .await,
    )?;
    let fourth = sync_once(&ctx).await?;
    println!(
        "   After `connector add` with the new token: {}",
        fourth.summary()
    );
    println!("\nDone in {:.1} s.", started.elapsed().as_secs_f64());
    if keep.is_some() {
        println!(
            "Look around: gradient-connector --config {} status",
            config_path.display()
        );
    } else {
        println!(
            "(`gradient-connector demo --keep DIR` keeps the store and config to look around in)"
        );
    }
    sim.shutdown().await;
    Ok(())
}

/// What Gradient received, per MSP: one line per account with its services' counts.
fn render_received(snap: &SimSnapshot, report: &RunReport, config: &Config) -> String {
    let mut o = String::new();
    // Gradient's service id → (our module, its name), for the configured services.
    let columns: Vec<(String, &str, &str)> = config
        .services
        .iter()
        .filter_map(|svc| {
            snap.service_id(&svc.name)
                .map(|id| (id.to_string(), svc.module.as_str(), svc.name.as_str()))
        })
        .collect();
    let _ = writeln!(o, "\n   What Gradient holds now (`404` = not mapped by the MSP yet; `kept N` = module disabled, Gradient keeps the last value; `-` = module not bought):");
    for org in &snap.orgs {
        let cr = report.connectors.iter().find(|c| c.id == org.id);
        let _ = writeln!(
            o,
            "\n   {} ({}, integration {})",
            org.name, org.id, org.status
        );
        let _ = write!(o, "     {:<28}", "account");
        for (_, _, name) in &columns {
            let _ = write!(o, " {:>18}", name);
        }
        let _ = writeln!(o);
        for a in &org.accounts {
            let _ = write!(o, "     {:<28}", a.name);
            for (sid, module, _) in &columns {
                let unmapped = cr.is_some_and(|c| {
                    c.unmapped
                        .iter()
                        .any(|(acc, m)| acc == &a.id && m == module)
                });
                let disabled = cr.is_some_and(|c| {
                    c.disabled
                        .iter()
                        .any(|(acc, m, _)| acc == &a.id && m == module)
                });
                let cell = match (org.count(&a.id, sid), unmapped, disabled) {
                    (_, true, _) => "404".to_string(),
                    (Some(n), false, true) => format!("kept {n}"),
                    (Some(n), false, false) => format!("{n}"),
                    (None, false, _) => "-".to_string(),
                };
                let _ = write!(o, " {:>18}", cell);
            }
            let _ = writeln!(o);
        }
    }
    o
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TempDir, std::io::Error> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let p = base.join(format!(
            "gradient-connector-demo-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(TempDir(p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "could not create a temporary directory",
    ))
}
