//! Time: instants (milliseconds since the Unix epoch, UTC, as the store keeps them), calendar months
//! in a time zone, and the period a run counts.
//!
//! Every conversion between wall-clock time in the schedule's zone and stored instants happens here,
//! so DST rules live in one place (chrono-tz).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// The current instant.
pub fn now_ms() -> Millis {
    Utc::now().timestamp_millis()
}

/// An instant as RFC 3339 in UTC (`2026-10-02T09:00:00Z`, with milliseconds only when non-zero).
pub fn format_ms(ms: Millis) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) if ms % 1000 == 0 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("@{ms}ms"),
    }
}

/// Serializes an instant as RFC 3339 UTC (every JSON output shows times this way).
pub fn serialize_rfc3339<S: serde::Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ms(*ms))
}

/// Serializes an optional instant as RFC 3339 UTC, or null.
pub fn serialize_rfc3339_opt<S: serde::Serializer>(
    ms: &Option<Millis>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&format_ms(*ms)),
        None => s.serialize_none(),
    }
}

/// Text that is not the time or month it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not an RFC 3339 timestamp.
    #[error("not an RFC 3339 time ({source}): {text:?}; write it as 2026-10-01T00:00:00Z")]
    NotRfc3339 {
        /// The text.
        text: String,
        /// What the parser said.
        #[source]
        source: chrono::ParseError,
    },
    /// Not a calendar month.
    #[error("expected a month as YYYY-MM (e.g. 2026-10), found {text:?}")]
    NotMonth {
        /// The text.
        text: String,
    },
}

/// Parses an RFC 3339 timestamp into an instant.
pub fn parse_rfc3339(s: &str) -> Result<Millis, TimeError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|source| TimeError::NotRfc3339 {
            text: s.to_string(),
            source,
        })
}

/// A calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month 1..=12.
    pub month: u32,
}

impl Month {
    /// The month containing `instant` in zone `tz`.
    pub fn containing(instant: Millis, tz: Tz) -> Month {
        let t = tz
            .timestamp_millis_opt(instant)
            .single()
            .unwrap_or_else(|| {
                // timestamp_millis_opt is only ambiguous for out-of-range values; fall back to UTC.
                Utc.timestamp_millis_opt(0)
                    .single()
                    .unwrap_or_default()
                    .with_timezone(&tz)
            });
        Month {
            year: t.year(),
            month: t.month(),
        }
    }

    /// The month before this one.
    pub fn previous(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// The month after this one.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// `[start, end)` of this month in zone `tz`, as instants.
    pub fn bounds(self, tz: Tz) -> (Millis, Millis) {
        (local_midnight(self, tz), local_midnight(self.next(), tz))
    }
}

/// The first instant of the month's first day in `tz` (midnight, or the first existing instant after
/// it where a DST gap swallows midnight).
fn local_midnight(m: Month, tz: Tz) -> Millis {
    let Some(date) = NaiveDate::from_ymd_opt(m.year, m.month, 1) else {
        return 0;
    };
    let mut local = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return t.timestamp_millis();
        }
        local += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default())
        .timestamp_millis()
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Month, TimeError> {
        let bad = || TimeError::NotMonth {
            text: s.to_string(),
        };
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || year < 1970 {
            return Err(bad());
        }
        Ok(Month { year, month })
    }
}

/// What a run counts: the state at one instant (daily cadence) or a calendar month (monthly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Counts as of this instant.
    AsOf(Millis),
    /// Counts over this month in the schedule's zone.
    Month(Month),
}

impl Period {
    /// A short label: the local date for `AsOf`, `YYYY-MM` for a month.
    pub fn label(&self, tz: Tz) -> String {
        match self {
            Period::AsOf(ms) => match tz.timestamp_millis_opt(*ms).single() {
                Some(t) => t.format("%Y-%m-%d").to_string(),
                None => format_ms(*ms),
            },
            Period::Month(m) => m.to_string(),
        }
    }
}

/// Where "now" comes from: the system's clock in production, an injected one in tests (the daemon
/// core's queue and timer, the webhook delivery loop).
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the epoch.
    fn now(&self) -> Millis;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_bounds_follow_dst_in_new_york() {
        let tz: Tz = "America/New_York".parse().unwrap();
        // November 2026 starts in EDT (UTC-4) and ends in EST (UTC-5).
        let (start, end) = Month {
            year: 2026,
            month: 11,
        }
        .bounds(tz);
        assert_eq!(format_ms(start), "2026-11-01T04:00:00Z");
        assert_eq!(format_ms(end), "2026-12-01T05:00:00Z");
        // March 2026: starts in EST, ends in EDT.
        let (start, end) = Month {
            year: 2026,
            month: 3,
        }
        .bounds(tz);
        assert_eq!(format_ms(start), "2026-03-01T05:00:00Z");
        assert_eq!(format_ms(end), "2026-04-01T04:00:00Z");
    }

    #[test]
    fn month_parsing_and_neighbours() {
        let m: Month = "2026-01".parse().unwrap();
        assert_eq!(m.previous().to_string(), "2025-12");
        assert_eq!(m.next().to_string(), "2026-02");
        assert!("2026-13".parse::<Month>().is_err());
        assert!("26-01".parse::<Month>().is_err());
        assert!("2026/01".parse::<Month>().is_err());
    }

    #[test]
    fn containing_uses_the_zone() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let t = parse_rfc3339("2026-11-01T03:00:00Z").unwrap(); // still Oct 31 in New York
        assert_eq!(Month::containing(t, tz).to_string(), "2026-10");
        assert_eq!(Month::containing(t, chrono_tz::UTC).to_string(), "2026-11");
    }
}
