//! Inventory records as typed structs, written as the import's JSON Lines by serde (never by
//! string formatting), and the common shapes tests need.

use std::io::Write;

use serde::Serialize;

use crate::domain::UnitKind;
use crate::time::{format_ms, Millis};

/// The instant most test inventories start at: modules are enabled then.
pub const OCTOBER_2026: &str = "2026-10-01T00:00:00Z";

/// The two modules of the standard test services ([`super::ConfigBuilder::standard_services`]).
pub const STANDARD_MODULES: [&str; 2] = ["endpoint_security", "email_security"];

/// One line of the import format.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    /// A channel (MSP).
    Channel(ChannelRecord),
    /// A workspace: new, renamed, moved to another channel, or removed.
    Workspace(WorkspaceRecord),
    /// A module switched on or off in a workspace.
    Module(ModuleRecord),
    /// A user, protected or not.
    User(UnitRecord),
    /// A device, protected or not.
    Device(UnitRecord),
    /// A metered quantity of a workspace's module.
    Usage(UsageRecord),
    /// A snapshot's header: the first line of `import --snapshot`.
    Snapshot(SnapshotRecord),
}

/// `{"type":"snapshot","at":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRecord {
    /// The instant the snapshot's state is as of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// `{"type":"channel",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelRecord {
    /// Channel id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// When it takes effect (RFC 3339); none = the import's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// `{"type":"workspace",...}`: `channel` and `name` are absent only in a removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkspaceRecord {
    /// Workspace id (Gradient's account id).
    pub id: String,
    /// The channel it belongs to (another channel than before moves it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Display name (the account name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `true` removes the workspace.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// When it takes effect (RFC 3339); none = the import's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// `{"type":"module",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleRecord {
    /// The workspace.
    pub workspace: String,
    /// The module id.
    pub module: String,
    /// On or off.
    pub enabled: bool,
    /// When it takes effect (RFC 3339); none = the import's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// `{"type":"user",...}` or `{"type":"device",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitRecord {
    /// The workspace it is in.
    pub workspace: String,
    /// Unit id.
    pub id: String,
    /// Protected or not.
    pub protected: bool,
    /// When it takes effect (RFC 3339); none = the import's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// `{"type":"usage",...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRecord {
    /// The workspace.
    pub workspace: String,
    /// The module (a `unit = "quantity"` service's).
    pub module: String,
    /// The quantity from `at` until the next usage record.
    pub quantity: f64,
    /// When it takes effect (RFC 3339); none = the import's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// How many protected units one workspace of [`Inventory::msps`] gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Units {
    /// Protected devices (`{workspace}-d{i}`).
    pub devices: usize,
    /// Protected users (`{workspace}-u{i}`).
    pub users: usize,
}

/// The id of MSP `m` in [`Inventory::msps`].
pub fn msp_id(m: usize) -> String {
    format!("msp-{m}")
}

/// The id of workspace `k` of MSP `m` in [`Inventory::msps`].
pub fn workspace_id(m: usize, k: usize) -> String {
    format!("msp-{m}-w{k}")
}

/// The id of unit `i` of a kind in a workspace, as [`Inventory::protected`] names it.
pub fn unit_id(workspace: &str, kind: UnitKind, i: usize) -> String {
    match kind {
        UnitKind::Devices => format!("{workspace}-d{i}"),
        UnitKind::Users => format!("{workspace}-u{i}"),
        UnitKind::Quantity => format!("{workspace}-q{i}"),
    }
}

/// An inventory being built: records in file order. Each record added takes the current `at`
/// ([`Inventory::at`]; none at first, i.e. the import's start).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    records: Vec<Record>,
    at: Option<String>,
}

impl Inventory {
    /// An empty inventory; records added have no `at` until [`Inventory::at`] is called.
    pub fn new() -> Inventory {
        Inventory::default()
    }

    /// A snapshot (for `import --snapshot`): its header, as of `at`, then what is added.
    pub fn snapshot(at: &str) -> Inventory {
        Inventory {
            records: vec![Record::Snapshot(SnapshotRecord {
                at: Some(at.to_string()),
            })],
            at: None,
        }
    }

    /// Records added from now on take effect at `at` (RFC 3339, written as given).
    pub fn at(&mut self, at: &str) -> &mut Self {
        self.at = Some(at.to_string());
        self
    }

    /// Records added from now on take effect at `at` (milliseconds since the epoch, UTC).
    pub fn at_ms(&mut self, at: Millis) -> &mut Self {
        self.at = Some(format_ms(at));
        self
    }

    /// Records added from now on carry no `at` (they take effect at the import's start).
    pub fn undated(&mut self) -> &mut Self {
        self.at = None;
        self
    }

    /// Adds any record as it is (its own `at` is kept).
    pub fn push(&mut self, record: Record) -> &mut Self {
        self.records.push(record);
        self
    }

    /// A channel (MSP).
    pub fn channel(&mut self, id: &str, name: &str) -> &mut Self {
        let at = self.at.clone();
        self.push(Record::Channel(ChannelRecord {
            id: id.into(),
            name: name.into(),
            at,
        }))
    }

    /// A workspace of `channel` (new or renamed).
    pub fn workspace(&mut self, id: &str, channel: &str, name: &str) -> &mut Self {
        let at = self.at.clone();
        self.push(Record::Workspace(WorkspaceRecord {
            id: id.into(),
            channel: Some(channel.into()),
            name: Some(name.into()),
            removed: false,
            at,
        }))
    }

    /// A workspace moved to another channel (the record is a workspace record naming the new
    /// channel).
    pub fn move_workspace(&mut self, id: &str, to_channel: &str, name: &str) -> &mut Self {
        self.workspace(id, to_channel, name)
    }

    /// A workspace removed (`"removed": true`).
    pub fn remove_workspace(&mut self, id: &str) -> &mut Self {
        let at = self.at.clone();
        self.push(Record::Workspace(WorkspaceRecord {
            id: id.into(),
            channel: None,
            name: None,
            removed: true,
            at,
        }))
    }

    /// A module switched on or off in a workspace.
    pub fn module(&mut self, workspace: &str, module: &str, enabled: bool) -> &mut Self {
        let at = self.at.clone();
        self.push(Record::Module(ModuleRecord {
            workspace: workspace.into(),
            module: module.into(),
            enabled,
            at,
        }))
    }

    /// A unit of either kind.
    pub fn unit(
        &mut self,
        kind: UnitKind,
        workspace: &str,
        id: &str,
        protected: bool,
    ) -> &mut Self {
        let r = UnitRecord {
            workspace: workspace.into(),
            id: id.into(),
            protected,
            at: self.at.clone(),
        };
        self.push(match kind {
            UnitKind::Users => Record::User(r),
            UnitKind::Devices => Record::Device(r),
            UnitKind::Quantity => panic!("a quantity is not a unit: use Inventory::usage"),
        })
    }

    /// A usage record: `quantity` of `module` in `workspace` from the current `at`.
    pub fn usage(&mut self, workspace: &str, module: &str, quantity: f64) -> &mut Self {
        let r = UsageRecord {
            workspace: workspace.into(),
            module: module.into(),
            quantity,
            at: self.at.clone(),
        };
        self.push(Record::Usage(r))
    }

    /// A user.
    pub fn user(&mut self, workspace: &str, id: &str, protected: bool) -> &mut Self {
        self.unit(UnitKind::Users, workspace, id, protected)
    }

    /// A device.
    pub fn device(&mut self, workspace: &str, id: &str, protected: bool) -> &mut Self {
        self.unit(UnitKind::Devices, workspace, id, protected)
    }

    /// `n` protected units of `kind` in `workspace`, named by [`unit_id`] (0..n).
    pub fn protected(&mut self, workspace: &str, kind: UnitKind, n: usize) -> &mut Self {
        for i in 0..n {
            self.unit(kind, workspace, &unit_id(workspace, kind, i), true);
        }
        self
    }

    /// `n_msps` MSPs ([`msp_id`], named as their id) × `workspaces_per_msp` workspaces
    /// ([`workspace_id`], named `W {id}`), both [`STANDARD_MODULES`] enabled everywhere, workspace
    /// `k` of each MSP with `units(k)` protected devices and users; every record at
    /// [`OCTOBER_2026`].
    pub fn msps(
        n_msps: usize,
        workspaces_per_msp: usize,
        units: impl Fn(usize) -> Units,
    ) -> Inventory {
        let mut inv = Inventory::new();
        inv.at(OCTOBER_2026);
        for m in 0..n_msps {
            let msp = msp_id(m);
            inv.channel(&msp, &msp);
            for k in 0..workspaces_per_msp {
                let ws = workspace_id(m, k);
                inv.workspace(&ws, &msp, &format!("W {ws}"));
                for module in STANDARD_MODULES {
                    inv.module(&ws, module, true);
                }
                let n = units(k);
                inv.protected(&ws, UnitKind::Devices, n.devices);
                inv.protected(&ws, UnitKind::Users, n.users);
            }
        }
        inv
    }

    /// One MSP `msp-a` with one workspace `ws-1`, both standard modules enabled, one protected
    /// device `d1` and one protected user `u1`, all at [`OCTOBER_2026`].
    pub fn small() -> Inventory {
        let mut inv = Inventory::new();
        inv.at(OCTOBER_2026)
            .channel("msp-a", "A")
            .workspace("ws-1", "msp-a", "One");
        for module in STANDARD_MODULES {
            inv.module("ws-1", module, true);
        }
        inv.device("ws-1", "d1", true).user("ws-1", "u1", true);
        inv
    }

    /// The records, in file order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends another inventory's records.
    pub fn extend(&mut self, other: &Inventory) -> &mut Self {
        self.records.extend(other.records.iter().cloned());
        self
    }

    /// Writes the records as JSON Lines (one object and a newline per record).
    pub fn write_jsonl(&self, mut out: impl Write) -> std::io::Result<()> {
        for r in &self.records {
            serde_json::to_writer(&mut out, r)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The records as JSON Lines text.
    pub fn to_jsonl(&self) -> String {
        let mut out = Vec::new();
        self.write_jsonl(&mut out)
            .expect("writing to memory cannot fail");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_the_import_format() {
        let mut inv = Inventory::new();
        inv.channel("msp-1", "Acme \"IT\"")
            .at("2026-10-01T00:00:00Z")
            .workspace("ws-1", "msp-1", "Contoso — ü")
            .module("ws-1", "endpoint_security", true)
            .user("ws-1", "u-1", true)
            .undated()
            .device("ws-1", "d-1", false)
            .move_workspace("ws-1", "msp-2", "Contoso")
            .remove_workspace("ws-1");
        let lines: Vec<serde_json::Value> = inv
            .to_jsonl()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let want = [
            r#"{"type":"channel","id":"msp-1","name":"Acme \"IT\""}"#,
            r#"{"type":"workspace","id":"ws-1","channel":"msp-1","name":"Contoso — ü","at":"2026-10-01T00:00:00Z"}"#,
            r#"{"type":"module","workspace":"ws-1","module":"endpoint_security","enabled":true,"at":"2026-10-01T00:00:00Z"}"#,
            r#"{"type":"user","workspace":"ws-1","id":"u-1","protected":true,"at":"2026-10-01T00:00:00Z"}"#,
            r#"{"type":"device","workspace":"ws-1","id":"d-1","protected":false}"#,
            r#"{"type":"workspace","id":"ws-1","channel":"msp-2","name":"Contoso"}"#,
            r#"{"type":"workspace","id":"ws-1","removed":true}"#,
        ];
        assert_eq!(lines.len(), want.len());
        for (got, want) in lines.iter().zip(want) {
            let want: serde_json::Value = serde_json::from_str(want).unwrap();
            assert_eq!(got, &want);
        }
        assert!(inv.to_jsonl().ends_with('\n'));
    }

    #[test]
    fn at_ms_is_rfc3339_utc() {
        let mut inv = Inventory::new();
        inv.at_ms(1_790_000_000_000).channel("c", "C");
        assert_eq!(
            inv.to_jsonl(),
            "{\"type\":\"channel\",\"id\":\"c\",\"name\":\"C\",\"at\":\"2026-09-21T14:13:20Z\"}\n"
        );
    }

    #[test]
    fn msps_has_the_documented_shape() {
        let inv = Inventory::msps(2, 3, |k| Units {
            devices: k + 1,
            users: k,
        });
        // Per MSP: 1 channel; per workspace: 1 workspace, 2 modules, k+1 devices, k users.
        let per_msp = 1 + (0..3).map(|k| 1 + 2 + (k + 1) + k).sum::<usize>();
        assert_eq!(inv.len(), 2 * per_msp);
        assert_eq!(
            inv.records()[1],
            Record::Workspace(WorkspaceRecord {
                id: "msp-0-w0".into(),
                channel: Some("msp-0".into()),
                name: Some("W msp-0-w0".into()),
                removed: false,
                at: Some(OCTOBER_2026.into()),
            })
        );
        assert!(inv.to_jsonl().contains(r#""id":"msp-1-w2-d2""#));
        assert_eq!(Inventory::small().len(), 6);
    }
}
