//! Schedule: the configured cron expression in its IANA time zone — parsing, the next slot, and the
//! slots missed while the daemon was down.
//!
//! A *slot* is the instant a scheduled run is due. Slot arithmetic uses croner (the parser inside
//! tokio-cron-scheduler) directly, because it is DST-correct: a non-existent 02:30 fires at 03:00
//! and an ambiguous 01:30 fires once.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::time::Millis;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression {expr:?}: {reason}; use six fields, seconds first: \"sec min hour day-of-month month day-of-week\", e.g. \"0 0 8 1 * *\"")]
    InvalidCron {
        /// The expression.
        expr: String,
        /// Why.
        reason: String,
    },
    /// No next slot could be computed (an expression that never matches).
    #[error("the cron expression {0:?} has no upcoming run")]
    NoNextSlot(String),
    /// The expression parses but has no slot within the horizon (e.g. February 31st).
    #[error("the cron expression {expr:?} has no run in the next {days} days (does its day-of-month exist in its month, e.g. not 31 in February?); the daemon would idle for ever: fix the day-of-month, month or day-of-week field")]
    NeverFires {
        /// The expression.
        expr: String,
        /// The horizon, in days.
        days: i64,
    },
}

/// How far ahead a schedule must have a run: a cron that does not fire within this many days is a
/// configuration mistake (`0 0 2 31 2 *`).
pub const FIRE_HORIZON_DAYS: i64 = 400;

/// The six fields, in order, with the values each accepts (names such as `JAN` or `MON` aside).
const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// Names the field that makes croner refuse `expr` and says why ("day-of-month: 32 is out of range
/// 1-31"). Each field is tried alone, the others `*`; `None` when no single field is to blame.
fn blame_field(expr: &str) -> Option<String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    for (i, field) in fields.iter().enumerate() {
        let (name, lo, hi) = FIELDS.get(i).copied()?;
        let mut alone = ["*"; 6];
        alone[i] = field;
        let Err(e) = cron_parser().parse(&alone.join(" ")) else {
            continue;
        };
        // The numbers of the field's lists and ranges (not its steps) must be in range.
        for part in field.split(',') {
            let values = part.split('/').next().unwrap_or(part);
            for n in values.split('-').filter_map(|v| v.parse::<u32>().ok()) {
                if n < lo || n > hi {
                    return Some(format!("{name}: {n} is out of range {lo}-{hi}"));
                }
            }
        }
        return Some(format!(
            "{name}: {field:?} is not valid ({e}); use numbers {lo}-{hi}, lists a,b, ranges a-b, steps */n or *"
        ));
    }
    None
}

fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .dom_and_dow(true)
        .build()
}

/// Parses a six-field cron expression (seconds first) the way tokio-cron-scheduler does, and checks
/// that tokio-cron-scheduler itself accepts it. This is the one judge of a cron expression: loading
/// the configuration (`check-config`, `run`, SIGHUP) and [`Schedule::new`] all come here.
pub fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(ScheduleError::InvalidCron {
            expr: expr.into(),
            reason: format!("it has {fields} fields"),
        });
    }
    let cron = cron_parser()
        .parse(expr)
        .map_err(|e| ScheduleError::InvalidCron {
            expr: expr.into(),
            reason: blame_field(expr).unwrap_or_else(|| e.to_string()),
        })?;
    // The chosen scheduler crate must accept the expression too (it is the reference parser). Its
    // parse does not depend on the zone.
    tokio_cron_scheduler::Job::new_async_tz(expr, Tz::UTC, |_, _| Box::pin(async {})).map_err(
        |e| ScheduleError::InvalidCron {
            expr: expr.into(),
            reason: format!("tokio-cron-scheduler refuses it: {e:?}"),
        },
    )?;
    Ok(cron)
}

/// A parsed schedule: cron expression plus zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    expr: String,
    tz: Tz,
}

impl Schedule {
    /// Parses `expr` (judged by [`parse_cron`]) in zone `tz`.
    pub fn new(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        Ok(Schedule {
            cron: parse_cron(expr)?,
            expr: expr.into(),
            tz,
        })
    }

    /// The cron expression.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: Millis) -> Result<Millis, ScheduleError> {
        // Slots are whole seconds: drop sub-second parts on the way in and out.
        let local = to_local(after - after.rem_euclid(1000), self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .map(|t| t.timestamp() * 1000)
            .map_err(|_| ScheduleError::NoNextSlot(self.expr.clone()))
    }

    /// Checks that the schedule has a slot within [`FIRE_HORIZON_DAYS`] after `now`: a cron that
    /// parses but never fires (February 31st) would leave the daemon idle for ever.
    pub fn check_fires(&self, now: Millis) -> Result<(), ScheduleError> {
        let never = || ScheduleError::NeverFires {
            expr: self.expr.clone(),
            days: FIRE_HORIZON_DAYS,
        };
        match self.next_after(now) {
            Ok(next) if next - now <= FIRE_HORIZON_DAYS * 86_400_000 => Ok(()),
            _ => Err(never()),
        }
    }

    /// The latest slot at or before `at`, if any within the last ~400 days.
    pub fn latest_at_or_before(&self, at: Millis) -> Option<Millis> {
        let local = to_local(at, self.tz);
        let t = self.cron.find_previous_occurrence(&local, true).ok()?;
        let ms = t.timestamp() * 1000;
        (at - ms <= 400 * 86_400_000).then_some(ms)
    }

    /// The slot that was missed while down: the latest slot in `(last_slot, now]`, if any.
    /// `last_slot` is the last slot the daemon started a run for (None on a fresh store: then the
    /// daemon does not invent a missed run).
    pub fn missed_slot(&self, last_slot: Option<Millis>, now: Millis) -> Option<Millis> {
        let last = last_slot?;
        let latest = self.latest_at_or_before(now)?;
        (latest > last).then_some(latest)
    }
}

fn to_local(ms: Millis, tz: Tz) -> DateTime<Tz> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&tz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{format_ms, parse_rfc3339};

    fn ny() -> Tz {
        "America/New_York".parse().unwrap()
    }

    fn slots(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = parse_rfc3339(from).unwrap();
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                format_ms(t)
            })
            .collect()
    }

    #[test]
    fn rejects_five_and_seven_fields_and_garbage() {
        assert!(parse_cron("0 2 * * *").is_err());
        assert!(parse_cron("0 0 2 * * * 2026").is_err());
        assert!(parse_cron("0 0 25 * * *").is_err());
        assert!(parse_cron("every day").is_err());
        assert!(parse_cron("0 0 8 1 * *").is_ok());
        assert!(parse_cron("*/2 * * * * *").is_ok());
    }

    #[test]
    fn a_refused_field_is_named_with_its_range() {
        let reason = |expr: &str| match parse_cron(expr) {
            Err(ScheduleError::InvalidCron { reason, .. }) => reason,
            other => panic!("{expr}: {other:?}"),
        };
        assert_eq!(
            reason("0 0 2 32 * *"),
            "day-of-month: 32 is out of range 1-31"
        );
        assert_eq!(reason("0 0 25 * * *"), "hour: 25 is out of range 0-23");
        assert_eq!(reason("0 61 * * * *"), "minute: 61 is out of range 0-59");
        assert_eq!(reason("0 0 0 1 1-13 *"), "month: 13 is out of range 1-12");
        assert!(
            reason("0 0 x * * *").starts_with("hour: \"x\" is not valid"),
            "{}",
            reason("0 0 x * * *")
        );
    }

    #[test]
    fn a_cron_that_never_fires_is_refused_and_a_yearly_one_is_not() {
        let now = parse_rfc3339("2026-11-30T00:00:00Z").unwrap();
        let never = Schedule::new("0 0 2 31 2 *", chrono_tz::UTC).unwrap();
        assert!(matches!(
            never.check_fires(now),
            Err(ScheduleError::NeverFires { days: 400, .. })
        ));
        let yearly = Schedule::new("0 0 2 1 11 *", chrono_tz::UTC).unwrap();
        assert!(yearly.check_fires(now).is_ok());
    }

    #[test]
    fn daily_0800_new_york_keeps_local_time_across_dst() {
        let s = Schedule::new("0 0 8 * * *", ny()).unwrap();
        // Spring forward on 2026-03-08: 08:00 EST = 13:00Z, then 08:00 EDT = 12:00Z.
        assert_eq!(
            slots(&s, "2026-03-07T00:00:00Z", 3),
            vec![
                "2026-03-07T13:00:00Z",
                "2026-03-08T12:00:00Z",
                "2026-03-09T12:00:00Z"
            ]
        );
        // Fall back on 2026-11-01.
        assert_eq!(
            slots(&s, "2026-10-31T00:00:00Z", 2),
            vec!["2026-10-31T12:00:00Z", "2026-11-01T13:00:00Z"]
        );
    }

    #[test]
    fn nonexistent_0230_runs_once_on_spring_forward_day() {
        let s = Schedule::new("0 30 2 * * *", ny()).unwrap();
        let got = slots(&s, "2026-03-07T12:00:00Z", 3);
        // 2026-03-08 02:30 does not exist in New York: the run happens once, at 03:00 EDT (07:00Z).
        assert_eq!(
            got,
            vec![
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z",
                "2026-03-10T06:30:00Z"
            ]
        );
    }

    #[test]
    fn ambiguous_0130_runs_once_on_fall_back_day() {
        let s = Schedule::new("0 30 1 * * *", ny()).unwrap();
        let got = slots(&s, "2026-10-31T12:00:00Z", 3);
        assert_eq!(got.len(), 3);
        // 01:30 happens twice on 2026-11-01 (EDT then EST); exactly one slot that day.
        let on_day: Vec<_> = got.iter().filter(|t| t.starts_with("2026-11-01")).collect();
        assert_eq!(on_day.len(), 1, "{got:?}");
        assert_eq!(
            got,
            vec![
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z",
                "2026-11-03T06:30:00Z"
            ]
        );
    }

    #[test]
    fn monthly_first_at_0800_eastern() {
        let s = Schedule::new("0 0 8 1 * *", ny()).unwrap();
        assert_eq!(
            slots(&s, "2026-10-15T00:00:00Z", 2),
            vec!["2026-11-01T13:00:00Z", "2026-12-01T13:00:00Z"]
        );
        assert_eq!(
            slots(&s, "2026-03-15T00:00:00Z", 1),
            vec!["2026-04-01T12:00:00Z"]
        );
    }

    #[test]
    fn missed_slot_detection() {
        let s = Schedule::new("0 0 2 * * *", chrono_tz::UTC).unwrap();
        let last = parse_rfc3339("2026-11-20T02:00:00Z").unwrap();
        // Down from the 20th to the 22nd 10:00: the latest missed slot (the 22nd 02:00) runs once.
        let now = parse_rfc3339("2026-11-22T10:00:00Z").unwrap();
        assert_eq!(
            s.missed_slot(Some(last), now).map(format_ms).as_deref(),
            Some("2026-11-22T02:00:00Z")
        );
        // Nothing missed when the last slot is the latest one.
        let last = parse_rfc3339("2026-11-22T02:00:00Z").unwrap();
        assert_eq!(s.missed_slot(Some(last), now), None);
        // A fresh store never invents a missed run.
        assert_eq!(s.missed_slot(None, now), None);
    }
}
