//! The duration literals of the attributes (`*timeout`, `restart_within`, `backoff`, `max_backoff`):
//! an integer followed by `ms`, `s`, `m` or `h`.

/// Parses `"250ms"`, `"10s"`, `"5m"` or `"1h"` into milliseconds; `Err` holds the message to show.
pub(crate) fn parse_millis(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "invalid duration {text:?}: expected an integer followed by `ms`, `s`, `m` or `h`, \
             like \"250ms\" or \"10s\""
        )
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid()),
    };
    if digits.is_empty() {
        return Err(invalid());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(millis_per_unit))
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn accepts_every_unit() {
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("10s"), Ok(10_000));
        assert_eq!(parse_millis("5m"), Ok(300_000));
        assert_eq!(parse_millis("2h"), Ok(7_200_000));
    }

    #[test]
    fn accepts_zero_and_leading_zeros() {
        assert_eq!(parse_millis("0ms"), Ok(0));
        assert_eq!(parse_millis("0s"), Ok(0));
        assert_eq!(parse_millis("007s"), Ok(7_000));
    }

    #[test]
    fn accepts_the_largest_value() {
        assert_eq!(parse_millis(&format!("{}ms", u64::MAX)), Ok(u64::MAX));
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "", "10", "ms", "10 s", " 10s", "10s ", "10 sec", "10sec", "10S", "1.5s", "-1s", "+1s",
            "1_000ms", "10us", "1d", "s10", "10ms5",
        ] {
            let message = parse_millis(text).unwrap_err();
            assert!(
                message.starts_with("invalid duration"),
                "{text:?} gave {message:?}"
            );
        }
    }

    #[test]
    fn the_message_quotes_the_text_and_lists_the_units() {
        assert_eq!(
            parse_millis("10 sec").unwrap_err(),
            "invalid duration \"10 sec\": expected an integer followed by `ms`, `s`, `m` or `h`, \
             like \"250ms\" or \"10s\""
        );
    }

    #[test]
    fn rejects_overflow() {
        assert_eq!(
            parse_millis("99999999999999999999ms").unwrap_err(),
            "duration \"99999999999999999999ms\" is too large"
        );
        assert_eq!(
            parse_millis(&format!("{}h", u64::MAX / 1000)).unwrap_err(),
            format!("duration \"{}h\" is too large", u64::MAX / 1000)
        );
    }
}
