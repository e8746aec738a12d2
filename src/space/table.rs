//! Tabular search spaces: the rows of a CSV file (a NAS benchmark such as HW-GPT-Bench) are
//! the candidates, chosen through some of its columns.
//!
//! Each decision column becomes one decision whose choices are the column's distinct values.
//! A column holding space-separated lists (one value per layer) becomes per-layer decisions:
//! after all single-valued decisions come `col_a[0]`, `col_b[0]`, `col_a[1]`, `col_b[1]`, and
//! so on, interleaved per layer. At every prefix the space offers only values that occur in
//! some row matching the prefix, so every walk ends at a row. The other columns are the rows'
//! metrics; they must be numeric.

use super::{Candidate, Decision, SearchSpace, SpaceError};
use num_bigint::BigUint;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// One decision column.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// Distinct values, numerically sorted when all are numbers, else lexically.
    labels: Vec<String>,
    /// Each label's value scaled to [0, 1] (by number when numeric, else by rank).
    scaled: Vec<f32>,
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// `(choice, child node)`, sorted by choice.
    children: Vec<(u32, u32)>,
    /// Row index when the path to this node is a complete candidate.
    row: Option<u32>,
}

/// A search space whose candidates are the rows of a table.
#[derive(Debug, Clone)]
pub struct TableSpace {
    name: String,
    scalars: Vec<Column>,
    lists: Vec<Column>,
    max_layers: usize,
    /// Choice sequence of each kept row.
    rows: Vec<Vec<u32>>,
    /// Data row of the file (from 0) of each kept row.
    source_rows: Vec<usize>,
    metric_names: Vec<String>,
    /// `rows.len() × metric_names.len()`, row-major.
    metrics: Vec<f64>,
    trie: Vec<TrieNode>,
    /// [`super::fnv1a_64`] of the header and every cell. The decisions are left out: a resume
    /// compares them separately, with a clearer message.
    digest: String,
}

fn invalid(message: String) -> SpaceError {
    SpaceError::Invalid(message)
}

impl TableSpace {
    /// Reads the CSV file at `path` and builds the space over the columns `decisions`.
    pub fn from_csv(path: &Path, decisions: &[String]) -> Result<Self, SpaceError> {
        let file = std::fs::File::open(path)
            .map_err(|source| SpaceError::Io { path: path.display().to_string(), source })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "table".into());
        let source = path.display().to_string();
        let mut reader = csv::Reader::from_reader(file);
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| invalid(format!("cannot read the header of {source}: {e}")))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let mut records = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| invalid(format!("cannot read {source} line {}: {e}", i + 2)))?;
            records.push(record.iter().map(|s| s.trim().to_string()).collect::<Vec<String>>());
        }
        Self::from_records(&name, &source, &headers, &records, decisions)
    }

    /// Builds the space from a header and rows already in memory; `source` names them in
    /// messages. Line numbers in messages count the header as line 1.
    pub fn from_records(
        name: &str,
        source: &str,
        headers: &[String],
        records: &[Vec<String>],
        decisions: &[String],
    ) -> Result<Self, SpaceError> {
        if headers.iter().all(String::is_empty) {
            return Err(invalid(format!("{source} has no header row; its first line must name the columns, separated by commas")));
        }
        if let Some((i, h)) = headers.iter().enumerate().find(|(i, h)| headers[..*i].contains(h)) {
            return Err(invalid(format!("{source} names column `{h}` twice in its header (column {} repeats an earlier one); give each column a distinct name", i + 1)));
        }
        if decisions.is_empty() {
            return Err(invalid(format!("no decision columns given for {source}; name one or more of: {}", headers.join(", "))));
        }
        let mut decision_index = Vec::new();
        for d in decisions {
            let Some(i) = headers.iter().position(|h| h == d) else {
                return Err(invalid(format!(
                    "decision column `{d}` is missing from {source}; its columns are: {}",
                    headers.join(", ")
                )));
            };
            if decision_index.contains(&i) {
                return Err(invalid(format!("decision column `{d}` is given twice")));
            }
            decision_index.push(i);
        }
        if records.is_empty() {
            return Err(invalid(format!("{source} has no rows")));
        }
        for (r, record) in records.iter().enumerate() {
            if record.len() != headers.len() {
                return Err(invalid(format!(
                    "{source} line {} has {} fields but the header has {}",
                    r + 2,
                    record.len(),
                    headers.len()
                )));
            }
        }

        // A decision column is per-layer when any of its cells contains more than one token.
        let is_list: Vec<bool> = decision_index
            .iter()
            .map(|&c| records.iter().any(|r| r[c].split_whitespace().count() > 1))
            .collect();
        let scalar_cols: Vec<usize> = decision_index.iter().zip(&is_list).filter(|(_, l)| !**l).map(|(c, _)| *c).collect();
        let list_cols: Vec<usize> = decision_index.iter().zip(&is_list).filter(|(_, l)| **l).map(|(c, _)| *c).collect();

        let build_column = |c: usize, tokens: &mut dyn Iterator<Item = String>| -> Column {
            let distinct: HashSet<String> = tokens.collect();
            let mut labels: Vec<String> = distinct.into_iter().collect();
            let numbers: Option<Vec<f64>> = labels.iter().map(|l| l.parse::<f64>().ok()).collect();
            let scaled = match numbers {
                Some(_) => {
                    labels.sort_by(|a, b| a.parse::<f64>().unwrap_or(0.0).total_cmp(&b.parse::<f64>().unwrap_or(0.0)));
                    let values: Vec<f64> = labels.iter().map(|l| l.parse::<f64>().unwrap_or(0.0)).collect();
                    let (lo, hi) = (values[0], values[values.len() - 1]);
                    values.iter().map(|v| if hi > lo { ((v - lo) / (hi - lo)) as f32 } else { 0.0 }).collect()
                }
                None => {
                    labels.sort();
                    let n = labels.len();
                    (0..n).map(|i| if n > 1 { i as f32 / (n - 1) as f32 } else { 0.0 }).collect()
                }
            };
            Column { name: headers[c].clone(), labels, scaled }
        };
        let scalars: Vec<Column> =
            scalar_cols.iter().map(|&c| build_column(c, &mut records.iter().map(|r| r[c].clone()))).collect();
        let lists: Vec<Column> = list_cols
            .iter()
            .map(|&c| {
                build_column(c, &mut records.iter().flat_map(|r| r[c].split_whitespace().map(str::to_string).collect::<Vec<_>>()))
            })
            .collect();
        for column in scalars.iter().chain(&lists) {
            if column.labels.iter().any(|l| l.is_empty()) {
                return Err(invalid(format!("decision column `{}` has empty cells in {source}; fill them or drop the rows", column.name)));
            }
        }

        let metric_cols: Vec<usize> = (0..headers.len()).filter(|c| !decision_index.contains(c)).collect();
        let metric_names: Vec<String> = metric_cols.iter().map(|&c| headers[c].clone()).collect();

        // Encode rows, check per-layer lengths, drop duplicate decision tuples.
        let label_index = |column: &Column, value: &str| column.labels.iter().position(|l| l == value).expect("label built from this column") as u32;
        let mut layers_of: HashMap<Vec<u32>, (usize, usize)> = HashMap::new();
        let mut seen: HashSet<Vec<u32>> = HashSet::new();
        let mut rows = Vec::new();
        let mut source_rows = Vec::new();
        let mut metrics = Vec::new();
        let mut duplicates = 0usize;
        let mut max_layers = 0usize;
        for (r, record) in records.iter().enumerate() {
            let line = r + 2;
            let scalar_choices: Vec<u32> =
                scalar_cols.iter().zip(&scalars).map(|(&c, col)| label_index(col, &record[c])).collect();
            let per_layer: Vec<Vec<u32>> = list_cols
                .iter()
                .zip(&lists)
                .map(|(&c, col)| record[c].split_whitespace().map(|t| label_index(col, t)).collect())
                .collect();
            let layers = per_layer.first().map_or(0, |v| v.len());
            if let Some((k, v)) = list_cols.iter().zip(&per_layer).find(|(_, v)| v.len() != layers) {
                return Err(invalid(format!(
                    "{source} line {line}: column `{}` has {} values but `{}` has {layers}; per-layer columns must list one value per layer",
                    headers[*k],
                    v.len(),
                    headers[list_cols[0]]
                )));
            }
            match layers_of.get(&scalar_choices) {
                Some(&(expected, first_line)) if expected != layers => {
                    return Err(invalid(format!(
                        "{source} lines {first_line} and {line} share the values of the single-valued decisions but list {expected} and {layers} layers; add the column that sets the number of layers (such as n_layer) to the decisions"
                    )));
                }
                Some(_) => {}
                None => {
                    layers_of.insert(scalar_choices.clone(), (layers, line));
                }
            }
            let mut choices = scalar_choices;
            for layer in 0..layers {
                for column in &per_layer {
                    choices.push(column[layer]);
                }
            }
            if !seen.insert(choices.clone()) {
                duplicates += 1;
                continue;
            }
            for (&c, metric) in metric_cols.iter().zip(&metric_names) {
                let value: f64 = record[c].parse().map_err(|_| {
                    invalid(format!(
                        "{source} line {line}: metric column `{metric}` holds `{}`, which is not a number; make it numeric or add it to the decisions",
                        record[c]
                    ))
                })?;
                metrics.push(value);
            }
            max_layers = max_layers.max(layers);
            rows.push(choices);
            source_rows.push(r);
        }
        if duplicates > 0 {
            log::warn!("{source}: dropped {} that repeat an earlier row's decision values", crate::error::plural(duplicates, "row", "rows"));
        }

        let mut trie = vec![TrieNode::default()];
        for (index, choices) in rows.iter().enumerate() {
            let mut node = 0usize;
            for &choice in choices {
                let found = trie[node].children.binary_search_by_key(&choice, |&(c, _)| c);
                node = match found {
                    Ok(k) => trie[node].children[k].1 as usize,
                    Err(k) => {
                        let child = trie.len();
                        trie.push(TrieNode::default());
                        trie[node].children.insert(k, (choice, child as u32));
                        child
                    }
                };
            }
            trie[node].row = Some(index as u32);
        }

        // Unit and record separators keep cell boundaries apart in the digest.
        let mut text = format!("{}\x1e", headers.join("\x1f"));
        for record in records {
            text.push_str(&record.join("\x1f"));
            text.push('\x1e');
        }
        Ok(TableSpace {
            name: name.to_string(),
            scalars,
            lists,
            max_layers,
            rows,
            source_rows,
            metric_names,
            metrics,
            trie,
            digest: super::fnv1a_64(text.as_bytes()),
        })
    }

    /// Number of rows kept (distinct decision tuples).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Returns whether the table has no rows, which a successfully built space never has.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Names of the metric columns, in file order.
    pub fn metric_names(&self) -> &[String] {
        &self.metric_names
    }

    /// Metric values of row `index`, in [`TableSpace::metric_names`] order.
    pub fn row_metrics(&self, index: usize) -> Option<&[f64]> {
        let m = self.metric_names.len();
        (index < self.rows.len()).then(|| &self.metrics[index * m..(index + 1) * m])
    }

    /// Choice sequence of row `index`.
    pub fn row_choices(&self, index: usize) -> Option<&[u32]> {
        self.rows.get(index).map(Vec::as_slice)
    }

    /// Decision values of row `index` by column name, per-layer columns joined by spaces.
    pub fn row_values(&self, index: usize) -> Vec<(String, String)> {
        let choices = &self.rows[index];
        let mut values: Vec<(String, String)> = self
            .scalars
            .iter()
            .zip(choices)
            .map(|(col, &c)| (col.name.clone(), col.labels[c as usize].clone()))
            .collect();
        let per_layer = &choices[self.scalars.len()..];
        for (k, col) in self.lists.iter().enumerate() {
            let tokens: Vec<&str> = per_layer
                .iter()
                .skip(k)
                .step_by(self.lists.len())
                .map(|&c| col.labels[c as usize].as_str())
                .collect();
            values.push((col.name.clone(), tokens.join(" ")));
        }
        values
    }

    fn walk(&self, prefix: &[u32]) -> Option<&TrieNode> {
        let mut node = &self.trie[0];
        for &choice in prefix {
            let k = node.children.binary_search_by_key(&choice, |&(c, _)| c).ok()?;
            node = &self.trie[node.children[k].1 as usize];
        }
        Some(node)
    }

    fn column_at(&self, position: usize) -> (&Column, Option<usize>) {
        if position < self.scalars.len() {
            return (&self.scalars[position], None);
        }
        let offset = position - self.scalars.len();
        (&self.lists[offset % self.lists.len()], Some(offset / self.lists.len()))
    }
}

impl SearchSpace for TableSpace {
    fn name(&self) -> &str {
        &self.name
    }

    fn definition_digest(&self) -> String {
        self.digest.clone()
    }

    fn next_decision(&self, prefix: &[u32]) -> Option<Decision> {
        let node = self.walk(prefix)?;
        if node.row.is_some() || node.children.is_empty() {
            return None;
        }
        let (column, layer) = self.column_at(prefix.len());
        let name = match layer {
            Some(l) => format!("{}[{l}]", column.name),
            None => column.name.clone(),
        };
        Some(Decision { name, labels: column.labels.clone() })
    }

    fn valid_choices(&self, prefix: &[u32]) -> Vec<u32> {
        match self.walk(prefix) {
            Some(node) if node.row.is_none() => node.children.iter().map(|&(c, _)| c).collect(),
            _ => Vec::new(),
        }
    }

    fn count(&self) -> BigUint {
        BigUint::from(self.rows.len())
    }

    fn sample(&self, rng: &mut dyn rand::RngCore) -> Vec<u32> {
        let index = (rng.next_u64() % self.rows.len() as u64) as usize;
        self.rows[index].clone()
    }

    fn candidate(&self, choices: &[u32]) -> Candidate {
        let index = self
            .walk(choices)
            .and_then(|node| node.row)
            .expect("candidate() takes a complete choice sequence of this table") as usize;
        Candidate::Row { index, source_row: self.source_rows[index], values: self.row_values(index) }
    }

    fn choices_of(&self, candidate: &Candidate) -> Option<Vec<u32>> {
        match candidate {
            Candidate::Row { index, values, .. } if *index < self.rows.len() && self.row_values(*index) == *values => {
                Some(self.rows[*index].clone())
            }
            _ => None,
        }
    }

    fn feature_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.scalars.iter().map(|c| c.name.clone()).collect();
        for layer in 0..self.max_layers {
            for column in &self.lists {
                names.push(format!("{}[{layer}]", column.name));
            }
        }
        for column in &self.lists {
            names.push(format!("{}_mean", column.name));
        }
        names
    }

    /// Scaled decision values; absent layers are 0, and each per-layer column adds the mean
    /// over present layers.
    fn features(&self, choices: &[u32]) -> Vec<f32> {
        let n_lists = self.lists.len();
        let mut out = Vec::with_capacity(self.scalars.len() + (self.max_layers + 1) * n_lists);
        for (column, &c) in self.scalars.iter().zip(choices) {
            out.push(column.scaled[c as usize]);
        }
        let per_layer = choices.get(self.scalars.len()..).unwrap_or(&[]);
        let mut sums = vec![0.0f32; n_lists];
        for layer in 0..self.max_layers {
            for (k, column) in self.lists.iter().enumerate() {
                let value = per_layer.get(layer * n_lists + k).map_or(0.0, |&c| column.scaled[c as usize]);
                sums[k] += value;
                out.push(value);
            }
        }
        let layers = per_layer.len().checked_div(n_lists).unwrap_or(0).max(1) as f32;
        out.extend(sums.iter().map(|s| s / layers));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn small() -> TableSpace {
        let headers = strings(&["d", "n_layer", "ratio", "lat", "ppl"]);
        let records = vec![
            strings(&["64", "1", "2", "1.0", "30"]),
            strings(&["64", "2", "2 4", "2.0", "25"]),
            strings(&["128", "2", "4 4", "4.0", "20"]),
            strings(&["128", "2", "4 2", "3.5", "21"]),
            strings(&["128", "2", "4 2", "9.9", "99"]),
        ];
        TableSpace::from_records("small", "small.csv", &headers, &records, &strings(&["d", "n_layer", "ratio"])).unwrap()
    }

    /// After a dropped duplicate, candidates still name their row of the file.
    #[test]
    fn candidates_keep_file_rows() {
        let headers = strings(&["w", "x"]);
        let records = vec![strings(&["64", "1"]), strings(&["64", "2"]), strings(&["128", "3"])];
        let space = TableSpace::from_records("t", "t.csv", &headers, &records, &strings(&["w"])).unwrap();
        let choice = space.row_values(1);
        assert_eq!(choice, vec![("w".to_string(), "128".to_string())]);
        let Candidate::Row { index, source_row, .. } = space.candidate(&space.rows[1].clone()) else { panic!("a row") };
        assert_eq!((index, source_row), (1, 2));
    }

    #[test]
    fn table_counts_and_dedupes() {
        let space = small();
        assert_eq!(space.count(), BigUint::from(4u32));
        assert_eq!(space.metric_names(), &["lat".to_string(), "ppl".to_string()]);
        // The duplicate keeps the first row's metrics.
        let index = space.rows.iter().position(|r| r == &vec![1, 1, 1, 0]).unwrap();
        assert_eq!(space.row_metrics(index).unwrap(), &[3.5, 21.0]);
    }

    #[test]
    fn table_offers_only_present_values() {
        let space = small();
        assert_eq!(space.valid_choices(&[]), vec![0, 1]);
        // d = 64 has rows with 1 and 2 layers; d = 128 only with 2.
        assert_eq!(space.valid_choices(&[0]), vec![0, 1]);
        assert_eq!(space.valid_choices(&[1]), vec![1]);
        // d = 64, n_layer = 1: a single layer with ratio 2, then complete.
        assert_eq!(space.valid_choices(&[0, 0]), vec![0]);
        assert_eq!(space.next_decision(&[0, 0]).unwrap().name, "ratio[0]");
        assert!(space.next_decision(&[0, 0, 0]).is_none());
        assert!(space.valid_choices(&[0, 0, 0]).is_empty());
        // d = 128, n_layer = 2, ratio[0] = 4: ratio[1] is 2 or 4.
        assert_eq!(space.valid_choices(&[1, 1, 1]), vec![0, 1]);
        assert_eq!(space.next_decision(&[1, 1, 1]).unwrap().name, "ratio[1]");
    }

    #[test]
    fn table_candidate_round_trip() {
        let space = small();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..20 {
            let choices = space.sample(&mut rng);
            let candidate = space.candidate(&choices);
            assert_eq!(space.choices_of(&candidate), Some(choices.clone()));
            assert_eq!(space.features(&choices).len(), space.feature_names().len());
        }
        let candidate = space.candidate(&[1, 1, 1, 0]);
        let Candidate::Row { values, .. } = candidate else { panic!("table candidates are rows") };
        assert_eq!(values, vec![
            ("d".to_string(), "128".to_string()),
            ("n_layer".to_string(), "2".to_string()),
            ("ratio".to_string(), "4 2".to_string())
        ]);
    }

    #[test]
    fn table_interleaves_per_layer_columns() {
        let headers = strings(&["n", "a", "b", "m"]);
        let records = vec![strings(&["2", "1 2", "3 4", "0.5"]), strings(&["2", "2 2", "4 4", "0.7"])];
        let space = TableSpace::from_records("t", "t.csv", &headers, &records, &strings(&["n", "a", "b"])).unwrap();
        let names: Vec<String> = (0..5).map(|p| {
            let prefix = space.rows[0][..p].to_vec();
            space.next_decision(&prefix).unwrap().name
        }).collect();
        assert_eq!(names, strings(&["n", "a[0]", "b[0]", "a[1]", "b[1]"]));
    }

    #[test]
    fn table_errors_name_the_fix() {
        let headers = strings(&["d", "lat"]);
        let ok = vec![strings(&["1", "2.0"])];
        let err = TableSpace::from_records("t", "t.csv", &headers, &ok, &strings(&["width"])).unwrap_err().to_string();
        assert!(err.contains("`width` is missing"), "{err}");
        assert!(err.contains("d, lat"), "{err}");
        let err = TableSpace::from_records("t", "t.csv", &headers, &[], &strings(&["d"])).unwrap_err().to_string();
        assert!(err.contains("no rows"), "{err}");
        let bad = vec![strings(&["1", "fast"])];
        let err = TableSpace::from_records("t", "t.csv", &headers, &bad, &strings(&["d"])).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("`lat`"), "{err}");
        assert!(err.contains("not a number"), "{err}");
    }

    #[test]
    fn table_rejects_ambiguous_layer_counts() {
        let headers = strings(&["d", "r", "m"]);
        let records = vec![strings(&["1", "2 3", "1"]), strings(&["1", "2 3 4", "2"])];
        let err = TableSpace::from_records("t", "t.csv", &headers, &records, &strings(&["d", "r"])).unwrap_err().to_string();
        assert!(err.contains("number of layers"), "{err}");
    }
}
