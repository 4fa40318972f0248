//! Value parsers shared by the commands' flags; each error says what is allowed (clap
//! prefixes the flag: "invalid value '0' for '--epochs <N>': expected ...").

/// A whole number of at least 1 (epochs, steps, threads, repetitions).
pub fn at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String> {
    match s.trim().parse::<T>() {
        Ok(v) if v >= T::from(1) => Ok(v),
        _ => Err(format!("expected a whole number of at least 1, got '{s}'")),
    }
}

/// A whole number, 0 allowed (a cadence where 0 means "never" or "only at the end").
pub fn whole(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("expected a whole number, 0 or more, got '{s}'"))
}

/// A finite number of 0 or more (weight decay).
pub fn non_negative(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a finite number, 0 or more, got '{s}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_take_their_range_and_refuse_the_rest() {
        assert_eq!(at_least_one::<u64>("1"), Ok(1));
        assert!(at_least_one::<usize>("0")
            .unwrap_err()
            .contains("at least 1"));
        assert!(at_least_one::<u64>("-3").is_err());
        assert_eq!(whole("0"), Ok(0));
        assert!(whole("-1").unwrap_err().contains("0 or more"));
        assert!(whole("x").is_err());
        assert_eq!(non_negative("0"), Ok(0.0));
        assert_eq!(non_negative("5e-4"), Ok(5e-4));
        for bad in ["-1", "nan", "inf", "x"] {
            assert!(non_negative(bad).is_err(), "{bad}");
        }
    }
}
