//! Surrogate inputs read from columns of a table space: properties of a row that are known
//! before it is evaluated, such as its parameter count, FLOPs or depth.
//!
//! With a few dozen results, a surrogate learns more from a handful of such columns than from
//! the encoding of every decision, so these features replace the decision encoding. On the
//! HW-GPT-Bench small space, a least-squares line in the log of the non-embedding parameter
//! count explains 99.5% of the variance of log perplexity over all 10,000 rows, while the
//! decision encoding has 27 inputs.

use super::config::SearchHooks;
use crate::space::table::TableSpace;
use crate::space::Candidate;

/// Ratio of a column's largest to smallest value from which a positive column is used in log
/// space, where sizes and latencies spread multiplicatively.
const LOG_RATIO: f64 = 10.0;

/// Returns the `--features` names without surrounding spaces. An empty or repeated name is an
/// error that calls the names `noun`s.
pub(crate) fn trimmed_names<'a>(names: &'a [String], noun: &str) -> crate::Result<Vec<&'a str>> {
    let mut out: Vec<&str> = Vec::with_capacity(names.len());
    for (position, raw) in names.iter().enumerate() {
        let name = raw.trim();
        if name.is_empty() {
            return Err(crate::Error::Invalid(format!(
                "--features has an empty {noun} name at position {}; separate names with single commas",
                position + 1
            )));
        }
        if out.contains(&name) {
            return Err(crate::Error::Invalid(format!("--features names `{name}` twice; name each {noun} once")));
        }
        out.push(name);
    }
    Ok(out)
}

/// [`SearchHooks`] that feed the surrogate chosen columns of each row instead of the
/// decision encoding.
///
/// A metric column gives its value, a scalar decision column its numeric or `true`/`false`
/// label, and a per-layer decision column the sum of its values over the layers. A column
/// whose values are all positive and span a factor of 10 or more enters as its natural log,
/// named `log(NAME)`.
#[derive(Debug, Clone)]
pub struct TableFeatures {
    names: Vec<String>,
    /// Row-major: one value per row and column.
    values: Vec<f32>,
}

impl TableFeatures {
    /// Reads `columns` of every row of `space`. A column that is missing, not numeric, named
    /// twice, or among `objectives` (known only after an evaluation) is an error. A column
    /// among `constraints` is accepted with a warning, because a table may hold a constrained
    /// property that is known beforehand, such as a parameter count.
    pub fn new(space: &TableSpace, columns: &[String], objectives: &[String], constraints: &[String]) -> crate::Result<Self> {
        if columns.is_empty() {
            return Err(crate::Error::Invalid("--features needs at least one column name".into()));
        }
        let rows = space.len();
        let mut names = Vec::with_capacity(columns.len());
        let mut by_column: Vec<Vec<f64>> = Vec::with_capacity(columns.len());
        for name in trimmed_names(columns, "column")? {
            if objectives.iter().any(|o| o == name) {
                return Err(crate::Error::Invalid(format!(
                    "--features {name}: `{name}` is an objective, known only after an evaluation; name columns known beforehand, such as a parameter count"
                )));
            }
            if constraints.iter().any(|c| c == name) {
                log::warn!("--features {name}: `{name}` is also a constraint; the surrogate reads it as known before evaluation");
            }
            let column = read_column(space, name)?;
            let (min, max) = column.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            if min == max {
                log::warn!("--features {name}: every row has the value {min}, so the column tells the surrogate nothing");
            }
            if min > 0.0 && max / min >= LOG_RATIO {
                names.push(format!("log({name})"));
                by_column.push(column.iter().map(|v| v.ln()).collect());
            } else {
                names.push(name.to_string());
                by_column.push(column);
            }
        }
        let mut values = Vec::with_capacity(rows * columns.len());
        for row in 0..rows {
            values.extend(by_column.iter().map(|c| c[row] as f32));
        }
        Ok(TableFeatures { names, values })
    }

    /// Feature names, with `log(...)` around the columns used in log space.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Reads the numeric value of column `name` for every row of `space`.
fn read_column(space: &TableSpace, name: &str) -> crate::Result<Vec<f64>> {
    let rows = space.len();
    if let Some(k) = space.metric_names().iter().position(|m| m == name) {
        let mut column = Vec::with_capacity(rows);
        for row in 0..rows {
            let value = space.row_metrics(row).expect("row index in range")[k];
            if !value.is_finite() {
                return Err(crate::Error::Invalid(format!(
                    "--features {name}: table row {row} (counting from 0 over distinct candidates) has the value {value}; fill in a finite number in every row or leave the column out"
                )));
            }
            column.push(value);
        }
        return Ok(column);
    }
    let is_decision = space.row_values(0).iter().any(|(column, _)| column == name);
    if !is_decision {
        let mut known: Vec<String> = space.row_values(0).into_iter().map(|(column, _)| column).collect();
        known.extend(space.metric_names().iter().cloned());
        return Err(crate::Error::Invalid(format!(
            "--features {name}: column not found; the table's columns are {}",
            known.join(", ")
        )));
    }
    let mut column = Vec::with_capacity(rows);
    for row in 0..rows {
        let values = space.row_values(row);
        let text = values.iter().find(|(column, _)| column == name).map(|(_, v)| v.as_str()).unwrap_or("");
        let mut sum = 0.0;
        for token in text.split_whitespace() {
            sum += match token {
                "true" => 1.0,
                "false" => 0.0,
                other => other.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                    crate::Error::Invalid(format!(
                        "--features {name}: table row {row} (counting from 0 over distinct candidates) has the value `{other}`, which is not a number or true/false"
                    ))
                })?,
            };
        }
        column.push(sum);
    }
    Ok(column)
}

impl SearchHooks for TableFeatures {
    fn extra_feature_names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn extra_features(&self, candidate: &Candidate, out: &mut Vec<f32>) {
        let n = self.names.len();
        match candidate {
            Candidate::Row { index, .. } if (index + 1) * n <= self.values.len() => {
                out.extend_from_slice(&self.values[index * n..(index + 1) * n]);
            }
            // A candidate that is not a row of this table has no values, so it gets zeros.
            _ => out.extend(std::iter::repeat_n(0.0, n)),
        }
    }

    fn keep_space_features(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::SearchSpace;

    fn space() -> TableSpace {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        let mut text = String::from("width,heads,bias,params,loss\n");
        for (i, width) in [64, 128, 256, 512, 1024].iter().enumerate() {
            text.push_str(&format!("{width},{} {},{},{},{}\n", i + 1, i + 2, i % 2 == 0, width * width * 12, 3.0 - i as f64 * 0.1));
        }
        std::fs::write(&path, text).unwrap();
        TableSpace::from_csv(&path, &["width".into(), "heads".into(), "bias".into()]).unwrap()
    }

    #[test]
    fn columns_read_per_row() {
        let space = space();
        let features = TableFeatures::new(&space, &["params".into(), " heads".into(), "bias".into()], &[], &[]).unwrap();
        assert_eq!(features.names(), ["log(params)", "heads", "bias"]);
        for index in 0..space.len() {
            let candidate = space.candidate(space.row_choices(index).unwrap());
            let Candidate::Row { values, .. } = &candidate else { panic!("a table space gives rows") };
            let width: f64 = values.iter().find(|(k, _)| k == "width").unwrap().1.parse().unwrap();
            let heads: f64 = values.iter().find(|(k, _)| k == "heads").unwrap().1.split(' ').map(|t| t.parse::<f64>().unwrap()).sum();
            let bias = if values.iter().any(|(k, v)| k == "bias" && v == "true") { 1.0 } else { 0.0 };
            let mut out = Vec::new();
            features.extra_features(&candidate, &mut out);
            assert!((out[0] as f64 - (width * width * 12.0).ln()).abs() < 1e-5, "row {index}: {out:?}");
            assert_eq!(out[1] as f64, heads, "row {index}");
            assert_eq!(out[2] as f64, bias, "row {index}");
        }
    }

    #[test]
    fn objective_column_rejected() {
        let err = TableFeatures::new(&space(), &["loss".into()], &["loss".into()], &[]).unwrap_err().to_string();
        assert!(err.contains("is an objective"), "{err}");
    }

    #[test]
    fn unknown_column_lists_columns() {
        let err = TableFeatures::new(&space(), &["depth".into()], &[], &[]).unwrap_err().to_string();
        assert!(err.contains("column not found"), "{err}");
        assert!(err.contains("params"), "{err}");
    }

    #[test]
    fn constraint_column_accepted() {
        let features = TableFeatures::new(&space(), &["params".into()], &[], &["params".into()]).unwrap();
        assert_eq!(features.names(), ["log(params)"]);
    }

    #[test]
    fn empty_and_repeated_names_rejected() {
        let err = TableFeatures::new(&space(), &["params".into(), "".into()], &[], &[]).unwrap_err().to_string();
        assert!(err.contains("empty column name at position 2"), "{err}");
        let err = TableFeatures::new(&space(), &["params".into(), "params".into()], &[], &[]).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
    }
}
