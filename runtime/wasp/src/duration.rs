//! Go-style durations (`30s`, `1m0s`, `100ms`, `1h30m`), as kube-proxy's flags and config
//! take them, or a bare number of seconds.

use std::time::Duration;

/// The longest duration accepted anywhere: a period beyond a year is a typo.
const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses a duration: a sum of number-unit pairs (`h`, `m`, `s`, `ms`, `us`/`µs`, `ns`), or a
/// bare number of seconds. Negative, non-finite and absurdly long values are errors, never a
/// panic.
///
/// # Errors
/// Says what is wrong with `s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. 30s, 1m0s or 100ms");
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    let secs = match t.parse::<f64>() {
        Ok(n) => n,
        Err(_) => units(t).ok_or_else(bad)?,
    };
    if !secs.is_finite() {
        return Err(bad());
    }
    if secs > MAX.as_secs_f64() {
        return Err(format!("invalid duration {s:?}: longer than a year"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// The seconds of `1h2m3.5s`-style text, if it is that.
fn units(mut rest: &str) -> Option<f64> {
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (num, tail) = rest.split_at(split);
        let n: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        total += n * match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = next;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn hostile_values_are_errors_not_panics() {
        for s in [
            "-1", "-1s", "NaN", "nan", "inf", "-inf", "1e30", "1e30s", "9999999h", "1e400",
        ] {
            let e = parse_duration(s).expect_err(s);
            assert!(e.contains("invalid duration"), "{s}: {e}");
        }
    }
}
