//! What the toolkit's harness-less benchmarks share: their command line and the median of
//! repeated runs.

/// The arguments a benchmark was started with (`cargo bench -p … -- --json --runs 3`).
#[derive(Clone, Debug)]
pub struct BenchArgs(Vec<String>);

impl BenchArgs {
    /// The arguments of this process.
    pub fn from_env() -> Self {
        Self(std::env::args().collect())
    }

    /// Whether `flag` (like `--json`) was given.
    pub fn flag(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }

    /// The text after `flag` (like `--only scan,load`), if any.
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }

    /// The number after `flag` (like `--runs 3`), or `default` when it is missing or not a
    /// number.
    pub fn number(&self, flag: &str, default: usize) -> usize {
        self.value(flag)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

/// The median of some measurements (the upper one of an even count); `NaN` for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flags_and_numbers() {
        let args = BenchArgs(
            ["bench", "--json", "--runs", "3", "--scale", "x"]
                .map(String::from)
                .to_vec(),
        );
        assert!(args.flag("--json"));
        assert!(!args.flag("--quiet"));
        assert_eq!(args.number("--runs", 1), 3);
        assert_eq!(args.number("--scale", 1), 1);
        assert_eq!(args.number("--events", 7), 7);
        assert_eq!(args.value("--runs"), Some("3"));
        assert_eq!(args.value("--only"), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(median(Vec::new()).is_nan());
    }
}
