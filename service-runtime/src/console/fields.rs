//! An event's fields as the console reads them: each value as text, and durations and
//! name lists read back from the `Debug` form the runtime records them in.

use std::fmt;
use std::time::Duration;

use tracing::field::{Field, Visit};

/// The message and the other fields of one event (or span), in the order recorded.
#[derive(Default)]
pub(super) struct Fields {
    pub(super) message: String,
    values: Vec<(&'static str, String)>,
}

impl Fields {
    /// The value of the field `name`, as text.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, value)| value.as_str())
    }

    /// Takes the value of the field `name` out, so that the rest no longer lists it.
    pub(super) fn take(&mut self, name: &str) -> Option<String> {
        let index = self.values.iter().position(|(field, _)| *field == name)?;
        Some(self.values.remove(index).1)
    }

    /// The field `name` as a duration (recorded as `?duration`).
    pub(super) fn duration(&self, name: &str) -> Option<Duration> {
        parse_duration(self.get(name)?)
    }

    /// The fields other than the message, in the order recorded.
    pub(super) fn rest(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.values
            .iter()
            .map(|(field, value)| (*field, value.as_str()))
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    // `%value` fields arrive here too, as a `Debug` that prints their `Display`.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.values.push((field.name(), value));
        }
    }
}

/// A `Duration` from its `Debug` form (`0ns`, `12.5µs`, `250ms`, `1.204s`).
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    // `ms`, `µs` and `ns` before `s`, which ends all of them.
    let (number, scale) = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .into_iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|number| (number, scale)))?;
    let value: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(value * scale).ok()
}

/// The names of a `Debug`-formatted list of strings (`["risk", "gateway"]`), for display.
pub(super) fn parse_names(text: &str) -> Vec<String> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(", ")
        .map(|name| name.trim().trim_matches('"'))
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A duration as a person reads it: `0ns`, `12µs`, `103ms`, `1.204s`, `25s`.
pub(super) fn short(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        let seconds = format!("{:.3}", duration.as_secs_f64());
        let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
        format!("{seconds}s")
    } else if duration >= Duration::from_millis(1) {
        format!("{}ms", duration.as_millis())
    } else if duration >= Duration::from_micros(1) {
        format!("{}µs", duration.as_micros())
    } else {
        format!("{}ns", duration.as_nanos())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{parse_duration, parse_names, short};

    #[test]
    fn durations_read_back_from_their_debug_form() {
        for duration in [
            Duration::ZERO,
            Duration::from_nanos(7),
            Duration::from_nanos(12_500),
            Duration::from_millis(250),
            Duration::from_micros(103_412),
            Duration::from_millis(1_204),
            Duration::from_secs(25),
            Duration::from_secs(3_600 * 24),
        ] {
            let text = format!("{duration:?}");
            let parsed = parse_duration(&text).unwrap_or_else(|| panic!("{text}"));
            let off = parsed.abs_diff(duration);
            assert!(off < Duration::from_nanos(2), "{text}: {parsed:?}");
        }
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn durations_display_to_a_useful_precision() {
        assert_eq!(short(Duration::ZERO), "0ns");
        assert_eq!(short(Duration::from_nanos(12_500)), "12µs");
        assert_eq!(short(Duration::from_micros(103_412)), "103ms");
        assert_eq!(short(Duration::from_millis(1_204)), "1.204s");
        assert_eq!(short(Duration::from_millis(2_500)), "2.5s");
        assert_eq!(short(Duration::from_secs(25)), "25s");
    }

    #[test]
    fn name_lists_read_back_from_their_debug_form() {
        let names = vec!["risk".to_owned(), "order_gateway".to_owned()];
        assert_eq!(parse_names(&format!("{names:?}")), names);
        assert!(parse_names("[]").is_empty());
    }
}
