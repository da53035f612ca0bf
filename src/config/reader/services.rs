//! `[[service]]` entries: each module a service, its unit (users, devices or a metered quantity)
//! and how a month of it is counted; the monthly rules that fit each unit.

use std::collections::HashSet;

use super::super::file::{Entries, ServiceKeys};

use super::super::keys::SERVICE;
use super::super::{ScheduleConfig, ServiceConfig};
use super::Reader;
use crate::domain::{MonthlyCount, UnitKind};

impl Reader<'_> {
    pub(super) fn services(&mut self, raw: Entries<ServiceKeys>) -> Option<Vec<ServiceConfig>> {
        let (entries, mut ok) = self.entries(SERVICE, raw)?;
        if entries.is_empty() && ok {
            self.problem(
                SERVICE,
                "no [[service]] is configured: add one per module that Gradient should bill",
            );
        }
        let mut out = Vec::new();
        let mut modules = HashSet::new();
        let mut names = HashSet::new();
        for (sec, s) in entries {
            let mut module = None;
            let mut name = None;
            let service = self.finish(s, |s| {
                module = s.str("module");
                name = s.str("name");
                let (module, name) = (module.clone()?, name.clone()?);
                let unit: UnitKind = s.word("unit")?;
                let quantity_name = s.opt_str("quantity_name")?.filter(|q| !q.is_empty());
                let description =
                    s.opt_str("description")?
                        .unwrap_or_else(|| match (&quantity_name, unit) {
                            (Some(q), UnitKind::Quantity) => format!("{name} ({q})"),
                            _ => name.clone(),
                        });
                Some(ServiceConfig {
                    description,
                    unit,
                    quantity_name,
                    decimals: s.num("decimals")?,
                    monthly_count: s.opt_word("monthly_count")?,
                    category: s.str("category")?,
                    subcategory: s.str("subcategory")?,
                    support_article: s.opt_str("support_article")?,
                    support_contact: s.opt_str("support_contact")?,
                    module,
                    name,
                })
            });
            if let Some(m) = module.filter(|m| !modules.insert(m.clone())) {
                self.problem(
                    format!("{sec}.module"),
                    format!("duplicate module {m:?}: each module is one service"),
                );
            }
            if let Some(n) = name.filter(|n| !names.insert(n.clone())) {
                self.problem(
                    format!("{sec}.name"),
                    format!("duplicate service name {n:?}: Gradient matches services by name"),
                );
            }
            match service {
                Some(service) => out.push(service),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `average` fits only quantity services and `distinct` only unit services: each service's own
    /// `monthly_count`, else `[schedule] monthly_count`, is checked against its unit.
    pub(super) fn check_measures(&mut self, schedule: &ScheduleConfig, services: &[ServiceConfig]) {
        for (i, s) in services.iter().enumerate() {
            let (key, rule) = match s.monthly_count {
                Some(rule) => (format!("service[{i}].monthly_count"), rule),
                None => ("schedule.monthly_count".to_string(), schedule.monthly_count),
            };
            let metered = s.unit == UnitKind::Quantity;
            let wrong = match rule {
                MonthlyCount::Average => !metered,
                MonthlyCount::Distinct => metered,
                MonthlyCount::Peak | MonthlyCount::End => false,
            };
            if wrong {
                let (fits, unit) = if metered {
                    ("`peak`, `end` or `average`", "a quantity service")
                } else {
                    ("`peak`, `end` or `distinct`", "a unit service")
                };
                self.problem(
                    key,
                    format!(
                        "`{rule}` does not fit service {:?}, {unit}: use {fits} (a service's own `monthly_count` overrides `[schedule] monthly_count`)",
                        s.module
                    ),
                );
            }
        }
    }
}
