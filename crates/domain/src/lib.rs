//! The shared words of gradient-connector, at the bottom of the workspace: every other crate may
//! use them, and they use none of ours. [`domain`] holds the typed ids and the enums with one text
//! form; [`count`] the pushed figure (`UnitCount`); [`time`] holds instants, calendar months in a zone and the period a run counts.

pub mod count;
pub mod domain;
pub mod time;
