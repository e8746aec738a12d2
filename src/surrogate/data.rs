//! Tables of observations and their encoding into surrogate features: numeric columns as
//! they are, categorical columns one-hot, or architectures through
//! [`crate::arch::features::encode`].

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SurrogateError;
use crate::arch::features::{encode, FEATURE_NAMES};
use crate::arch::Architecture;

/// Architecture JSON keys that can appear as table columns.
const ARCH_KEYS: &[&str] = &[
    "vocab_size",
    "max_seq_len",
    "d_model",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "head_dim",
    "d_ff",
    "ffn",
    "norm",
    "pos",
    "bias",
    "tie_embeddings",
    "layers",
];

/// A table of text cells read from CSV or JSON lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Reads a `.jsonl`/`.ndjson` file as JSON lines (one object per line) and any other file
    /// as CSV with a header row.
    pub fn read(path: &Path) -> crate::Result<Table> {
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let is_json_lines = matches!(extension.as_deref(), Some("jsonl" | "ndjson"));
        let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(format!("cannot read table {}", path.display()), e))?;
        let table = if is_json_lines { Self::from_json_lines(&text) } else { Self::from_csv(&text) };
        table.map_err(|e| SurrogateError::Table(format!("{}: {e}", path.display())).into())
    }

    /// Parses CSV text with a header row.
    pub fn from_csv(text: &str) -> Result<Table, String> {
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
        let columns: Vec<String> = reader.headers().map_err(|e| format!("invalid CSV header: {e}"))?.iter().map(|s| s.trim().to_string()).collect();
        if columns.iter().all(String::is_empty) {
            return Err("no header row; the first line must name the columns, separated by commas".into());
        }
        if columns.first().is_some_and(|c| c.starts_with('[')) {
            return Err("the file starts with a JSON array, which is not read; write one JSON object per line in a .jsonl file, or a CSV file".into());
        }
        if columns.first().is_some_and(|c| c.starts_with('{')) {
            return Err("the first line is a JSON object, but the file was read as CSV; JSON lines files need the extension .jsonl or .ndjson".into());
        }
        if let Some((i, name)) = columns.iter().enumerate().find(|(i, c)| columns[..*i].contains(c)) {
            return Err(format!("the header names column `{name}` twice (column {} repeats an earlier one); give each column a distinct name", i + 1));
        }
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| format!("invalid CSV at data row {i}: {e}"))?;
            rows.push(record.iter().map(|s| s.trim().to_string()).collect());
        }
        Ok(Table { columns, rows })
    }

    /// Parses JSON lines: each non-empty line is an object. The columns are the keys in the
    /// order first seen. Strings are kept as they are, other values as their JSON text, and a
    /// key a row lacks is an empty cell.
    pub fn from_json_lines(text: &str) -> Result<Table, String> {
        let mut columns: Vec<String> = Vec::new();
        let mut objects = Vec::new();
        for (line_number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("line {}: invalid JSON: {e}", line_number + 1))?;
            let serde_json::Value::Object(object) = value else {
                return Err(format!("line {}: expected a JSON object", line_number + 1));
            };
            for key in object.keys() {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
            objects.push(object);
        }
        let rows = objects
            .iter()
            .map(|object| {
                columns
                    .iter()
                    .map(|c| match object.get(c) {
                        None | Some(serde_json::Value::Null) => String::new(),
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        Ok(Table { columns, rows })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Index of column `name`; the error lists the columns there are.
    pub fn column_index(&self, name: &str) -> Result<usize, SurrogateError> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| SurrogateError::Invalid(format!("column `{name}` not found in the data; its columns are {}", self.columns.join(","))))
    }

    /// Values of column `name` as numbers; the error names the row and the cell.
    pub fn numeric_column(&self, name: &str) -> Result<Vec<f64>, SurrogateError> {
        let j = self.column_index(name)?;
        self.rows.iter().enumerate().map(|(r, row)| parse_number(&row[j], name, r)).collect()
    }

    /// Keeps rows `start..end` (0-based, end exclusive, clamped to the table).
    pub fn slice_rows(&self, start: usize, end: usize) -> Result<Table, SurrogateError> {
        let end = end.min(self.len());
        if start >= end {
            return Err(SurrogateError::Invalid(format!("row range {start}..{end} selects no rows of a table with {} rows", self.len())));
        }
        Ok(Table { columns: self.columns.clone(), rows: self.rows[start..end].to_vec() })
    }

    /// Indices of the rows whose column `name` equals `value`; an error when there are none,
    /// which lists some values the column has.
    pub fn matching_rows(&self, name: &str, value: &str) -> Result<Vec<usize>, SurrogateError> {
        let j = self.column_index(name)?;
        let indices: Vec<usize> = (0..self.len()).filter(|&i| self.rows[i][j] == value).collect();
        if indices.is_empty() {
            let seen: BTreeSet<&str> = self.rows.iter().map(|row| row[j].as_str()).collect();
            let shown: Vec<&str> = seen.into_iter().take(20).collect();
            return Err(SurrogateError::Invalid(format!("no row has {name}={value}; values present include {}", shown.join(","))));
        }
        Ok(indices)
    }

    /// Keeps the rows whose column `name` equals `value`.
    pub fn filter_equal(&self, name: &str, value: &str) -> Result<Table, SurrogateError> {
        Ok(self.take_rows(&self.matching_rows(name, value)?))
    }

    /// Keeps the rows at `indices`, in that order.
    pub fn take_rows(&self, indices: &[usize]) -> Table {
        Table { columns: self.columns.clone(), rows: indices.iter().map(|&i| self.rows[i].clone()).collect() }
    }
}

fn parse_number(cell: &str, column: &str, row: usize) -> Result<f64, SurrogateError> {
    let value: f64 = cell
        .parse()
        .map_err(|_| SurrogateError::Table(format!("column `{column}` row {row}: `{cell}` is not a number; fix the cell or drop the row")))?;
    if !value.is_finite() {
        return Err(SurrogateError::Table(format!("column `{column}` row {row} is {value}; every value must be finite")));
    }
    Ok(value)
}

/// Encoding of one table column into features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ColumnEncoding {
    /// The cell is parsed as a number.
    Numeric { name: String },
    /// One feature per category, 1 for the row's category and 0 for the others. A category
    /// not seen at fit time encodes as all zeros.
    Categorical { name: String, categories: Vec<String> },
}

/// Encoding of a table into the model's feature rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum InputSpec {
    /// Chosen columns, in order.
    Columns { columns: Vec<ColumnEncoding> },
    /// Architectures (an `arch` column of JSON, or columns named like architecture keys)
    /// encoded by [`crate::arch::features::encode`].
    Arch,
}

impl InputSpec {
    /// Builds an encoding of `columns` of `table`: a column whose non-empty cells all parse as
    /// numbers is numeric, any other is categorical with the categories seen, sorted.
    pub fn from_table(table: &Table, columns: &[String]) -> Result<InputSpec, SurrogateError> {
        if columns.is_empty() {
            return Err(SurrogateError::Invalid("no feature columns were given; name them with --features or use --arch-features".into()));
        }
        let mut encodings = Vec::new();
        for name in columns {
            let j = table.column_index(name)?;
            let numeric = table.rows.iter().all(|row| row[j].is_empty() || row[j].parse::<f64>().is_ok());
            if numeric {
                encodings.push(ColumnEncoding::Numeric { name: name.clone() });
            } else {
                // A mostly numeric column with a few other cells is more likely a typo than a
                // category, so the warning names the cell that made it categorical.
                let total = table.rows.iter().filter(|row| !row[j].is_empty()).count();
                let others: Vec<(usize, &str)> = table
                    .rows
                    .iter()
                    .enumerate()
                    .filter(|(_, row)| !row[j].is_empty() && row[j].parse::<f64>().is_err())
                    .map(|(r, row)| (r, row[j].as_str()))
                    .collect();
                if others.len() * 2 < total {
                    let (r, cell) = others[0];
                    log::warn!(
                        "column `{name}` is one-hot encoded because {} of its {total} cells are not numbers (the first is row {r}: `{cell}`); fix those cells if the column is numeric",
                        others.len()
                    );
                }
                let categories: BTreeSet<String> = table.rows.iter().map(|row| row[j].clone()).collect();
                // One feature per category learns nothing when most categories occur once, as
                // with a list of per-layer values per cell.
                if categories.len() > 20 && categories.len() * 2 > table.rows.len() {
                    log::warn!(
                        "column `{name}` becomes {} one-hot features for {} rows, so most categories occur once and teach the model nothing; summarise it as numeric columns (a mean, a count) or leave it out",
                        categories.len(),
                        table.rows.len()
                    );
                }
                encodings.push(ColumnEncoding::Categorical { name: name.clone(), categories: categories.into_iter().collect() });
            }
        }
        Ok(InputSpec::Columns { columns: encodings })
    }

    /// Names of the features, in order: a numeric column's name, or `column=category` for
    /// each category of a categorical column.
    pub fn feature_names(&self) -> Vec<String> {
        match self {
            InputSpec::Arch => FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            InputSpec::Columns { columns } => columns
                .iter()
                .flat_map(|c| match c {
                    ColumnEncoding::Numeric { name } => vec![name.clone()],
                    ColumnEncoding::Categorical { name, categories } => categories.iter().map(|cat| format!("{name}={cat}")).collect(),
                })
                .collect(),
        }
    }

    /// Encodes every row of `table`. Errors name missing columns, and the row and cell of
    /// any value that cannot be encoded.
    pub fn encode(&self, table: &Table) -> Result<Vec<Vec<f64>>, SurrogateError> {
        match self {
            InputSpec::Arch => encode_architectures(table),
            InputSpec::Columns { columns } => encode_columns(table, columns),
        }
    }
}

fn encode_columns(table: &Table, columns: &[ColumnEncoding]) -> Result<Vec<Vec<f64>>, SurrogateError> {
    let names: Vec<&str> = columns
        .iter()
        .map(|c| match c {
            ColumnEncoding::Numeric { name } | ColumnEncoding::Categorical { name, .. } => name.as_str(),
        })
        .collect();
    let missing: Vec<&str> = names.iter().copied().filter(|n| !table.columns.iter().any(|c| c == n)).collect();
    if !missing.is_empty() {
        return Err(SurrogateError::FeatureMismatch(format!("the table lacks the model's feature columns [{}]; it has {}", missing.join(", "), table.columns.join(","))));
    }
    let indices: Vec<usize> = names.iter().map(|n| table.columns.iter().position(|c| c == n).unwrap_or(0)).collect();

    let mut unseen = 0usize;
    let mut rows = Vec::with_capacity(table.len());
    for (r, row) in table.rows.iter().enumerate() {
        let mut features = Vec::new();
        for (encoding, &j) in columns.iter().zip(&indices) {
            match encoding {
                ColumnEncoding::Numeric { name } => features.push(parse_number(&row[j], name, r)?),
                ColumnEncoding::Categorical { categories, .. } => {
                    let position = categories.iter().position(|c| *c == row[j]);
                    if position.is_none() {
                        unseen += 1;
                    }
                    features.extend(categories.iter().enumerate().map(|(i, _)| if Some(i) == position { 1.0 } else { 0.0 }));
                }
            }
        }
        rows.push(features);
    }
    if unseen > 0 {
        log::warn!("{unseen} categorical cells hold a category not seen when the model was fitted; they are encoded as all zeros");
    }
    Ok(rows)
}

fn encode_architectures(table: &Table) -> Result<Vec<Vec<f64>>, SurrogateError> {
    let arch_column = table.columns.iter().position(|c| c == "arch");
    let key_columns: Vec<(usize, &str)> = table.columns.iter().enumerate().filter(|(_, c)| ARCH_KEYS.contains(&c.as_str())).map(|(j, c)| (j, c.as_str())).collect();
    if arch_column.is_none() && key_columns.is_empty() {
        return Err(SurrogateError::FeatureMismatch(format!(
            "--arch-features needs an `arch` column of architecture JSON or architecture columns ({}); the table has {}",
            ARCH_KEYS.join(","),
            table.columns.join(",")
        )));
    }

    let mut rows = Vec::with_capacity(table.len());
    for (r, row) in table.rows.iter().enumerate() {
        let json = match arch_column {
            Some(j) => row[j].clone(),
            None => {
                let mut object = serde_json::Map::new();
                for &(j, key) in &key_columns {
                    if row[j].is_empty() {
                        continue;
                    }
                    // Numbers, booleans and lists are JSON already; names such as `swiglu` are not.
                    let value = serde_json::from_str(&row[j]).unwrap_or_else(|_| serde_json::Value::String(row[j].clone()));
                    object.insert(key.to_string(), value);
                }
                serde_json::Value::Object(object).to_string()
            }
        };
        let arch = Architecture::from_json(&json).map_err(|e| SurrogateError::Table(format!("row {r}: invalid architecture: {e}")))?;
        rows.push(encode(&arch));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_header_checked() {
        let empty = Table::from_csv("").unwrap_err();
        assert!(empty.contains("no header row"), "{empty}");
        let twice = Table::from_csv("w,w,ppl\n1,2,3\n").unwrap_err();
        assert!(twice.contains("names column `w` twice"), "{twice}");
        let json = Table::from_csv("{\"x\": 1, \"y\": 2}\n").unwrap_err();
        assert!(json.contains("extension .jsonl"), "{json}");
        let array = Table::from_csv("[{\"x\": 1}, {\"x\": 2}]\n").unwrap_err();
        assert!(array.contains("JSON array, which is not read"), "{array}");
    }

    #[test]
    fn csv_columns_encode_with_one_hot() {
        let table = Table::from_csv("a,kind,b\n1,x,2\n3,y,4\n5,x,6\n").unwrap();
        let spec = InputSpec::from_table(&table, &["kind".into(), "a".into()]).unwrap();
        assert_eq!(spec.feature_names(), vec!["kind=x", "kind=y", "a"]);
        let rows = spec.encode(&table).unwrap();
        assert_eq!(rows, vec![vec![1.0, 0.0, 1.0], vec![0.0, 1.0, 3.0], vec![1.0, 0.0, 5.0]]);
    }

    #[test]
    fn unseen_category_encodes_as_zeros() {
        let fit_table = Table::from_csv("kind\nx\ny\n").unwrap();
        let spec = InputSpec::from_table(&fit_table, &["kind".into()]).unwrap();
        let new_table = Table::from_csv("kind\nz\n").unwrap();
        assert_eq!(spec.encode(&new_table).unwrap(), vec![vec![0.0, 0.0]]);
    }

    #[test]
    fn missing_feature_column_is_named() {
        let table = Table::from_csv("a,b\n1,2\n").unwrap();
        let spec = InputSpec::Columns { columns: vec![ColumnEncoding::Numeric { name: "a".into() }, ColumnEncoding::Numeric { name: "c".into() }] };
        let message = spec.encode(&table).unwrap_err().to_string();
        assert!(message.contains("[c]"), "{message}");
    }

    #[test]
    fn non_numeric_cell_names_row_and_column() {
        let table = Table::from_csv("a\n1\nfoo\n").unwrap();
        let message = table.numeric_column("a").unwrap_err().to_string();
        assert!(message.contains("row 1"), "{message}");
    assert!(message.contains("`a`"), "{message}");
    }

    #[test]
    fn json_lines_read_nested_values() {
        let text = "{\"arch\": {\"d_model\": 256, \"n_layers\": 2, \"n_heads\": 4, \"d_ff\": 1024}, \"latency\": 1.5}\n\n{\"latency\": 2, \"arch\": {\"d_model\": 512, \"n_layers\": 4, \"n_heads\": 8, \"d_ff\": 2048}}\n";
        let table = Table::from_json_lines(text).unwrap();
        assert_eq!(table.columns, vec!["arch", "latency"]);
        assert_eq!(table.numeric_column("latency").unwrap(), vec![1.5, 2.0]);
        let rows = InputSpec::Arch.encode(&table).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].len(), FEATURE_NAMES.len());
        assert_eq!(rows[1][1], 512.0);
    }

    #[test]
    fn architecture_columns_encode() {
        let table = Table::from_csv("d_model,n_layers,n_heads,d_ff,ffn\n256,2,4,1024,gelu\n").unwrap();
        let rows = InputSpec::Arch.encode(&table).unwrap();
        let gelu = FEATURE_NAMES.iter().position(|n| *n == "ffn_gelu").unwrap();
        assert_eq!(rows[0][gelu], 1.0);
    }

    #[test]
    fn filter_and_slice_rows() {
        let table = Table::from_csv("g,v\na,1\nb,2\na,3\n").unwrap();
        let filtered = table.filter_equal("g", "a").unwrap();
        assert_eq!(filtered.numeric_column("v").unwrap(), vec![1.0, 3.0]);
        assert_eq!(table.slice_rows(1, 10).unwrap().numeric_column("v").unwrap(), vec![2.0, 3.0]);
        assert!(table.slice_rows(3, 5).is_err());
        assert!(table.filter_equal("g", "c").is_err());
    }
}
