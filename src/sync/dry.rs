//! A dry run: the plan of a run without sending anything.

use super::*;

/// A dry run's plan: what a run would push now, with no request and no write.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// `daily` or `monthly`.
    pub cadence: Cadence,
    /// Period label.
    pub period: String,
    /// Per connector.
    pub connectors: Vec<DryRunConnector>,
    /// Modules whose Gradient id is not known yet (created by the first real run).
    pub services_not_yet_known: Vec<String>,
    /// Module → unit name of the metered services (`GB`): their counts are quantities.
    pub quantity_names: HashMap<String, String>,
}

/// One connector in a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunConnector {
    /// State.
    pub state: ConnectorState,
    /// The plan.
    #[serde(flatten)]
    pub plan: ConnectorPlan,
}

/// Computes the plan of a run without contacting Gradient or writing anything.
pub async fn dry_run(config: &Arc<Config>, req: &RunRequest) -> Result<DryRun, SyncError> {
    let now = now_ms();
    let period = request_period(config, req, now);
    let store_key = Arc::new(StoreKey::new(config.load_store_key()?));
    let store = store_handle(config).with_key(store_key);
    let setup = read_setup(&store, config, req.connector.clone(), period).await?;
    if let Some(only) = &req.connector {
        if setup.connectors.is_empty() {
            return Err(SyncError::UnknownConnector(only.clone()));
        }
    }
    let listed: Vec<&ConnectorRow> = setup
        .connectors
        .iter()
        .filter(|(row, token)| row.state != ConnectorState::Disconnected && token.is_some())
        .map(|(row, _)| row)
        .collect();
    let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    let mut plans = plans_for(&setup, &ids, &setup.stored_service_ids);
    let connectors = listed
        .into_iter()
        .map(|row| DryRunConnector {
            state: row.state,
            plan: plans.remove(&row.id).unwrap_or_default(),
        })
        .collect();
    let services_not_yet_known = config
        .services
        .iter()
        .filter(|s| !setup.stored_service_ids.contains_key(&s.module))
        .map(|s| s.module.clone())
        .collect();
    Ok(DryRun {
        cadence: cadence_label(&period),
        period: period.label(config.schedule.timezone),
        connectors,
        services_not_yet_known,
        quantity_names: config.quantity_names(),
    })
}
