//! The vendor's services (Gradient's skus) as configured by `[[service]]`: matched by exact name in
//! the catalogue read once, created once when missing (a creation is never repeated after a
//! timeout or 5xx), their Gradient ids saved. Runs when a token is pasted (so the MSP can map
//! services at once) and at the start of every run.

use std::collections::{BTreeMap, HashMap};

use crate::config::ServiceConfig;
use crate::gradient::{NewService, PartnerSession, Sku, Vendor};
use crate::store::StoreHandle;
use crate::time::now_ms;

/// How configured services map onto Gradient's catalogue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceResolution {
    /// module → Gradient service id, for services found by exact name.
    pub found: BTreeMap<String, String>,
    /// Modules whose service name is not in the catalogue (to be created once).
    pub missing: Vec<String>,
    /// Names that appear more than once in the catalogue (the first is used).
    pub duplicates: Vec<String>,
}

/// Matches configured services to the catalogue by exact name.
pub fn resolve_services(configured: &[ServiceConfig], catalogue: &[Sku]) -> ServiceResolution {
    let mut out = ServiceResolution::default();
    for s in configured {
        let matches: Vec<&Sku> = catalogue.iter().filter(|k| k.name == s.name).collect();
        match matches.first() {
            Some(k) => {
                out.found.insert(s.module.clone(), k.id.clone());
                if matches.len() > 1 {
                    out.duplicates.push(s.name.clone());
                }
            }
            None => out.missing.push(s.module.clone()),
        }
    }
    out
}

/// Matches the configured services against `vendor`'s catalogue, creates the missing ones once
/// and saves every id. Returns module → Gradient service id (a service that could not be created is
/// absent: its pairs fail this run, logged).
pub async fn ensure_services(
    session: &PartnerSession,
    vendor: &Vendor,
    services: &[ServiceConfig],
    store: &StoreHandle,
) -> HashMap<String, String> {
    let resolution = resolve_services(services, &vendor.skus);
    for name in &resolution.duplicates {
        tracing::warn!(service = %name, "Gradient's catalogue holds this service name more than once; using the first");
    }
    let mut ids: HashMap<String, String> = resolution.found.into_iter().collect();
    for module in &resolution.missing {
        let Some(svc) = services.iter().find(|s| &s.module == module) else {
            continue;
        };
        tracing::warn!(service = %svc.name, module = %module, "service not in Gradient's catalogue: creating it once");
        let new = NewService {
            name: svc.name.clone(),
            description: svc.description.clone(),
            category: svc.category.clone(),
            subcategory: svc.subcategory.clone(),
            support_article: svc.support_article.clone(),
            support_contact: svc.support_contact.clone(),
        };
        match session.create_service(&new).await {
            Ok(v) => match v.value.skus.iter().rev().find(|k| k.name == svc.name) {
                Some(k) => {
                    ids.insert(module.clone(), k.id.clone());
                }
                None => {
                    tracing::error!(service = %svc.name, "Gradient created the service but its answer does not list it; its pairs fail this run")
                }
            },
            Err(e) => {
                tracing::error!(service = %svc.name, error = %e, "could not create the service; its pairs fail this run");
            }
        }
    }
    let now = now_ms();
    let to_save: Vec<(String, String, String)> = services
        .iter()
        .filter_map(|s| {
            ids.get(&s.module)
                .map(|id| (s.module.clone(), s.name.clone(), id.clone()))
        })
        .collect();
    if let Err(e) = store
        .write(move |s| {
            for (m, n, id) in &to_save {
                s.save_service_id(m, n, id, now)?;
            }
            Ok(())
        })
        .await
    {
        tracing::warn!(error = %e, "could not remember Gradient's service ids");
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UnitKind;

    #[test]
    fn services_resolve_by_exact_name() {
        let svc = |m: &str, n: &str| ServiceConfig {
            module: m.into(),
            name: n.into(),
            description: n.into(),
            unit: UnitKind::Users,
            quantity_name: None,
            decimals: 2,
            monthly_count: None,
            category: "security".into(),
            subcategory: "email security".into(),
            support_article: None,
            support_contact: None,
        };
        let sku = |id: &str, n: &str| Sku {
            id: id.into(),
            name: n.into(),
            description: None,
            category: None,
            subcategory: None,
        };
        let r = resolve_services(
            &[svc("a", "Alpha"), svc("b", "Beta")],
            &[sku("1", "alpha"), sku("2", "Beta"), sku("3", "Beta")],
        );
        assert_eq!(r.found.get("b").map(String::as_str), Some("2"));
        assert_eq!(r.missing, vec!["a".to_string()]);
        assert_eq!(r.duplicates, vec!["Beta".to_string()]);
    }
}
