//! Durations in YAML: `30s`, `2m`, `500ms`.
//!
//! `#[serde(with = "duration")]` takes zero or more, `duration::positive` more
//! than zero (a zero timeout or interval would spin or stall), and
//! `duration::optional` an optional positive one. Every duration is at most
//! [`MAX`]: longer ones would wrap when added to millisecond event times.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration accepted anywhere: 100 years.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse(d, false)
}

fn parse<'de, D: Deserializer<'de>>(d: D, positive: bool) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let refuse = |why: String| {
        serde::de::Error::custom(format!(
            "invalid duration `{text}` ({why}); write it like `30s`, `2m` or `500ms`"
        ))
    };
    let value = humantime::parse_duration(&text).map_err(|e| refuse(e.to_string()))?;
    if positive && value.is_zero() {
        return Err(refuse("it must be longer than zero".into()));
    }
    if value > MAX {
        return Err(refuse("it must be at most 100 years".into()));
    }
    Ok(value)
}

/// A duration longer than zero (`#[serde(with = "duration::positive")]`).
pub mod positive {
    use std::time::Duration;

    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::parse(d, true)
    }
}

/// An optional positive duration (`#[serde(default, with = "duration::optional")]`).
pub mod optional {
    use std::time::Duration;

    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::parse(d, true).map(Some)
    }
}
