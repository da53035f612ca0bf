//! A pushed figure: [`UnitCount`], a whole count of units (users, devices) or a metered quantity
//! (GB of a backup service) with at most six decimals, held exactly in millionths. Its one text
//! form is the shortest decimal (`12`, `512.25`); as JSON it is a number (an integer when whole);
//! in SQLite an INTEGER when whole, else a REAL.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Millionths in one.
const ONE: u64 = 1_000_000;

/// The most decimals a figure keeps.
pub const MAX_DECIMALS: u8 = 6;

/// A figure pushed as a service's `unitCount`: never negative, exact to a millionth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitCount(u64);

impl UnitCount {
    /// Zero.
    pub const ZERO: UnitCount = UnitCount(0);

    /// `n` whole units (saturating).
    pub fn whole(n: u64) -> Self {
        UnitCount(n.saturating_mul(ONE))
    }

    /// A value given in millionths.
    pub fn from_millionths(m: u64) -> Self {
        UnitCount(m)
    }

    /// The value in millionths.
    pub fn millionths(self) -> u64 {
        self.0
    }

    /// A quantity as read from an inventory record: `None` unless it is a finite, non-negative
    /// number that fits; rounded up to a millionth.
    pub fn from_quantity(q: f64) -> Option<Self> {
        if !q.is_finite() || q < 0.0 {
            return None;
        }
        // A decimal such as 0.1 is a hair off in binary: take the nearest millionth when it is
        // that close, else round up.
        let x = q * ONE as f64;
        let near = x.round();
        let m = if (x - near).abs() <= x * 1e-12 + 1e-6 {
            near
        } else {
            x.ceil()
        };
        if m >= u64::MAX as f64 {
            return None;
        }
        Some(UnitCount(m as u64))
    }

    /// Whether it is a whole number.
    pub fn is_whole(self) -> bool {
        self.0.is_multiple_of(ONE)
    }

    /// The whole part.
    pub fn whole_part(self) -> u64 {
        self.0 / ONE
    }

    /// Rounded **up** to `decimals` (at most [`MAX_DECIMALS`]).
    pub fn round_up(self, decimals: u8) -> Self {
        let step = 10u64.pow(u32::from(MAX_DECIMALS - decimals.min(MAX_DECIMALS)));
        UnitCount(self.0.div_ceil(step).saturating_mul(step))
    }

    /// The value as a float (exact for every figure below 2^53 millionths).
    pub fn as_f64(self) -> f64 {
        if self.is_whole() {
            self.whole_part() as f64
        } else {
            // The shortest decimal text parses to the nearest float.
            self.to_string()
                .parse()
                .unwrap_or(self.0 as f64 / ONE as f64)
        }
    }

    /// `self - previous` as signed text: `+3`, `-1.5`, `+0`.
    pub fn change_from(self, previous: UnitCount) -> String {
        match self.cmp(&previous) {
            std::cmp::Ordering::Equal => "+0".to_string(),
            std::cmp::Ordering::Greater => format!("+{}", UnitCount(self.0 - previous.0)),
            std::cmp::Ordering::Less => format!("-{}", UnitCount(previous.0 - self.0)),
        }
    }

    /// `self - previous` as a float (for JSON answers).
    pub fn delta_from(self, previous: UnitCount) -> f64 {
        if self >= previous {
            UnitCount(self.0 - previous.0).as_f64()
        } else {
            -UnitCount(previous.0 - self.0).as_f64()
        }
    }
}

impl From<u64> for UnitCount {
    fn from(n: u64) -> Self {
        UnitCount::whole(n)
    }
}

impl PartialEq<u64> for UnitCount {
    fn eq(&self, other: &u64) -> bool {
        *self == UnitCount::whole(*other)
    }
}

impl fmt::Display for UnitCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / ONE, self.0 % ONE);
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:06}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Text that is not a figure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a non-negative number with at most six decimals")]
pub struct NotACount {
    /// The text.
    pub text: String,
}

impl std::str::FromStr for UnitCount {
    type Err = NotACount;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NotACount {
            text: s.to_string(),
        };
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() || frac.len() > 6 || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let frac: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<6}").parse().map_err(|_| bad())?
        };
        whole
            .checked_mul(ONE)
            .and_then(|w| w.checked_add(frac))
            .map(UnitCount)
            .ok_or_else(bad)
    }
}

impl Serialize for UnitCount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_whole() {
            s.serialize_u64(self.whole_part())
        } else {
            s.serialize_f64(self.as_f64())
        }
    }
}

impl<'de> Deserialize<'de> for UnitCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(u) = n.as_u64() {
            return Ok(UnitCount::whole(u));
        }
        n.as_f64()
            .and_then(UnitCount::from_quantity)
            .ok_or_else(|| serde::de::Error::custom("a count is a non-negative number"))
    }
}

/// In the OpenAPI document: a non-negative JSON number.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for UnitCount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .minimum(Some(0.0))
            .description(Some(
                "a whole count of units, or a metered quantity (at most six decimals)",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for UnitCount {}

#[cfg(feature = "sqlite")]
impl rusqlite::ToSql for UnitCount {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value};
        Ok(ToSqlOutput::Owned(if self.is_whole() {
            Value::Integer(i64::try_from(self.whole_part()).unwrap_or(i64::MAX))
        } else {
            Value::Real(self.as_f64())
        }))
    }
}

#[cfg(feature = "sqlite")]
impl rusqlite::types::FromSql for UnitCount {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        use rusqlite::types::{FromSqlError, ValueRef};
        match v {
            ValueRef::Integer(i) => Ok(UnitCount::whole(u64::try_from(i).unwrap_or(0))),
            ValueRef::Real(r) => UnitCount::from_quantity(r).ok_or(FromSqlError::InvalidType),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_json_and_rounding() {
        let q = UnitCount::from_quantity(512.25).unwrap();
        assert_eq!(q.to_string(), "512.25");
        assert_eq!(serde_json::to_string(&q).unwrap(), "512.25");
        assert_eq!(serde_json::to_string(&UnitCount::whole(7)).unwrap(), "7");
        assert_eq!(UnitCount::from_quantity(0.1).unwrap().millionths(), 100_000);
        assert_eq!(
            UnitCount::from_quantity(1.0000001).unwrap().millionths(),
            1_000_001
        );
        assert_eq!(q.round_up(1).to_string(), "512.3");
        assert_eq!(q.round_up(0).to_string(), "513");
        assert_eq!(q.round_up(2), q);
        assert_eq!(UnitCount::whole(3).round_up(0), UnitCount::whole(3));
        assert_eq!("512.25".parse::<UnitCount>().unwrap(), q);
        assert!("-1".parse::<UnitCount>().is_err());
        assert!("1.".parse::<UnitCount>().is_err());
        assert!("1.1234567".parse::<UnitCount>().is_err());
        assert_eq!(q.change_from(UnitCount::whole(500)), "+12.25");
        assert_eq!(UnitCount::whole(500).change_from(q), "-12.25");
        assert_eq!(UnitCount::whole(5).change_from(UnitCount::whole(5)), "+0");
        assert!(UnitCount::from_quantity(f64::NAN).is_none());
        assert!(UnitCount::from_quantity(-0.5).is_none());
        let back: UnitCount = serde_json::from_str("512.25").unwrap();
        assert_eq!(back, q);
        let back: UnitCount = serde_json::from_str("9").unwrap();
        assert_eq!(back, UnitCount::whole(9));
    }
}
