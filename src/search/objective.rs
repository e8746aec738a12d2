//! Objectives (`min:NAME`, `max:NAME`) and constraints (`NAME<=VALUE`, `NAME>=VALUE`) as the
//! command line spells them, and the feasibility test applied to measured metrics.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Whether an objective is minimised or maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sense {
    Min,
    Max,
}

/// One metric to optimise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Objective {
    /// Metric name, as an evaluator returns it (`perplexity`, `latency_decode_ms`, ...).
    pub metric: String,
    pub sense: Sense,
}

impl Objective {
    /// A minimised objective on `metric`.
    pub fn min(metric: impl Into<String>) -> Self {
        Objective { metric: metric.into(), sense: Sense::Min }
    }

    /// A maximised objective on `metric`.
    pub fn max(metric: impl Into<String>) -> Self {
        Objective { metric: metric.into(), sense: Sense::Max }
    }

    /// Parses `min:NAME` or `max:NAME`.
    pub fn parse(text: &str) -> crate::Result<Self> {
        let invalid = || {
            crate::Error::Invalid(format!(
                "invalid objective `{text}`; write min:NAME or max:NAME, for example min:perplexity"
            ))
        };
        let (sense, metric) = text.trim().split_once(':').ok_or_else(invalid)?;
        let sense = match sense.trim() {
            "min" => Sense::Min,
            "max" => Sense::Max,
            _ => return Err(invalid()),
        };
        let metric = metric.trim();
        if metric.is_empty() || metric.contains(char::is_whitespace) {
            return Err(invalid());
        }
        Ok(Objective { metric: metric.to_string(), sense })
    }

    /// The metric value turned into a quantity to minimise (maximised metrics are negated).
    pub fn to_minimised(&self, value: f64) -> f64 {
        match self.sense {
            Sense::Min => value,
            Sense::Max => -value,
        }
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sense = match self.sense {
            Sense::Min => "min",
            Sense::Max => "max",
        };
        write!(f, "{sense}:{}", self.metric)
    }
}

/// Direction of a constraint's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Bound {
    /// The metric must be at most the limit.
    #[serde(rename = "<=")]
    AtMost,
    /// The metric must be at least the limit.
    #[serde(rename = ">=")]
    AtLeast,
}

/// A hard limit on one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    pub metric: String,
    pub bound: Bound,
    pub limit: f64,
}

impl Constraint {
    /// Parses `NAME<=VALUE` or `NAME>=VALUE`.
    pub fn parse(text: &str) -> crate::Result<Self> {
        let invalid = |why: &str| {
            crate::Error::Invalid(format!(
                "invalid constraint `{text}`: {why}; write NAME<=VALUE or NAME>=VALUE, for example latency_decode_ms<=7"
            ))
        };
        let (metric, bound, value) = if let Some((m, v)) = text.split_once("<=") {
            (m, Bound::AtMost, v)
        } else if let Some((m, v)) = text.split_once(">=") {
            (m, Bound::AtLeast, v)
        } else {
            return Err(invalid("no <= or >= found"));
        };
        let metric = metric.trim();
        if metric.is_empty() || metric.contains(char::is_whitespace) {
            return Err(invalid("the metric name is missing or contains spaces"));
        }
        let limit: f64 = value
            .trim()
            .parse()
            .map_err(|_| invalid(&format!("`{}` is not a number", value.trim())))?;
        if !limit.is_finite() {
            return Err(invalid("the limit must be finite"));
        }
        Ok(Constraint { metric: metric.to_string(), bound, limit })
    }

    /// Whether `value` satisfies the constraint.
    pub fn is_satisfied(&self, value: f64) -> bool {
        match self.bound {
            Bound::AtMost => value <= self.limit,
            Bound::AtLeast => value >= self.limit,
        }
    }

    /// Probability that a normally distributed metric with `mean` and `std` satisfies the
    /// constraint. A zero `std` gives 0 or 1.
    pub fn probability(&self, mean: f64, std: f64) -> f64 {
        if std <= 0.0 || !std.is_finite() {
            return if self.is_satisfied(mean) { 1.0 } else { 0.0 };
        }
        let z = (self.limit - mean) / std;
        match self.bound {
            Bound::AtMost => normal_cdf(z),
            Bound::AtLeast => normal_cdf(-z),
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.bound {
            Bound::AtMost => "<=",
            Bound::AtLeast => ">=",
        };
        write!(f, "{}{op}{}", self.metric, self.limit)
    }
}

/// Whether `metrics` satisfies every constraint. A missing metric counts as a violation.
pub fn is_feasible(constraints: &[Constraint], metrics: &BTreeMap<String, f64>) -> bool {
    constraints.iter().all(|c| metrics.get(&c.metric).is_some_and(|&v| c.is_satisfied(v)))
}

/// Standard normal cumulative distribution function. Uses the complementary error function
/// approximation of Numerical Recipes (`erfcc`, fractional error below 1.2e-7).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objective_parse_min_and_max() {
        assert_eq!(Objective::parse("min:perplexity").unwrap(), Objective::min("perplexity"));
        assert_eq!(Objective::parse(" max:accuracy ").unwrap(), Objective::max("accuracy"));
        assert_eq!(Objective::min("lat").to_string(), "min:lat");
    }

    #[test]
    fn objective_parse_rejects_bad_text() {
        for text in ["perplexity", "low:perplexity", "min:", "min:a b"] {
            let err = Objective::parse(text).unwrap_err().to_string();
            assert!(err.contains("min:NAME"), "{text}: {err}");
        }
    }

    #[test]
    fn constraint_parse_both_bounds() {
        let c = Constraint::parse("lat<=7").unwrap();
        assert_eq!(c.metric, "lat");
        assert_eq!(c.bound, Bound::AtMost);
        assert_eq!(c.limit, 7.0);
        assert!(c.is_satisfied(7.0));
        assert!(!c.is_satisfied(7.1));

        let c = Constraint::parse("accuracy >= 0.5").unwrap();
        assert_eq!(c.bound, Bound::AtLeast);
        assert!(c.is_satisfied(0.6));
        assert!(!c.is_satisfied(0.4));
    }

    #[test]
    fn constraint_parse_rejects_bad_text() {
        assert!(Constraint::parse("lat<7").unwrap_err().to_string().contains("no <= or >="));
        assert!(Constraint::parse("lat<=fast").unwrap_err().to_string().contains("not a number"));
        assert!(Constraint::parse("<=3").unwrap_err().to_string().contains("missing"));
        assert!(Constraint::parse("lat<=inf").is_err());
    }

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.0) - 0.841_344_746).abs() < 1e-6);
        assert!((normal_cdf(-1.96) - 0.024_997_895).abs() < 1e-6);
        assert!(normal_cdf(10.0) > 0.999_999);
    }

    #[test]
    fn constraint_probability_follows_cdf() {
        let c = Constraint::parse("lat<=10").unwrap();
        assert!((c.probability(10.0, 2.0) - 0.5).abs() < 1e-7);
        assert!((c.probability(8.0, 2.0) - normal_cdf(1.0)).abs() < 1e-7);
        assert_eq!(c.probability(11.0, 0.0), 0.0);
        let c = Constraint::parse("acc>=0.5").unwrap();
        assert!((c.probability(0.7, 0.2) - normal_cdf(1.0)).abs() < 1e-7);
    }
}
