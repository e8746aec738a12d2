//! The TOML search-space format: parsing and checking of `[fixed]`, `[decisions]` and
//! `[constraints]`, with one-line errors that name the entry and the fix.
//!
//! `docs/SPACES.md` describes the format for users. This module turns a file into a
//! [`SpaceSpec`]: typed fixed values, decisions with their choice lists, and constraints. It
//! does not enumerate architectures; [`super::Space`] does that.

use super::SpaceError;
use crate::arch::{Ffn, Norm, Pos, MAX_DIM};
use std::collections::BTreeMap;
use std::fmt;

/// Largest depth a space may offer, the limit of `Architecture::validate`.
const MAX_LAYERS: u64 = 4096;

/// Most choices one decision may list (a range included).
const MAX_CHOICES: usize = 100_000;

/// An architecture field that a space can fix or decide.
///
/// The variant order is the decision order of the global decisions, and of each layer's
/// decisions too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    NLayers,
    DModel,
    NHeads,
    NKvHeads,
    HeadDim,
    DFf,
    MlpRatio,
    Ffn,
    Norm,
    Pos,
    Bias,
    TieEmbeddings,
    VocabSize,
    MaxSeqLen,
}

/// Type of the values a field takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A positive integer.
    Int,
    /// A positive number, integer or not.
    Ratio,
    Bool,
    Ffn,
    Norm,
    Pos,
}

impl Field {
    /// Every field, in decision order.
    pub const ALL: [Field; 14] = [
        Field::NLayers,
        Field::DModel,
        Field::NHeads,
        Field::NKvHeads,
        Field::HeadDim,
        Field::DFf,
        Field::MlpRatio,
        Field::Ffn,
        Field::Norm,
        Field::Pos,
        Field::Bias,
        Field::TieEmbeddings,
        Field::VocabSize,
        Field::MaxSeqLen,
    ];

    /// Returns the key used in space files and decision names.
    pub fn name(self) -> &'static str {
        match self {
            Field::NLayers => "n_layers",
            Field::DModel => "d_model",
            Field::NHeads => "n_heads",
            Field::NKvHeads => "n_kv_heads",
            Field::HeadDim => "head_dim",
            Field::DFf => "d_ff",
            Field::MlpRatio => "mlp_ratio",
            Field::Ffn => "ffn",
            Field::Norm => "norm",
            Field::Pos => "pos",
            Field::Bias => "bias",
            Field::TieEmbeddings => "tie_embeddings",
            Field::VocabSize => "vocab_size",
            Field::MaxSeqLen => "max_seq_len",
        }
    }

    fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Returns whether each layer can take its own value of this field.
    pub fn can_be_per_layer(self) -> bool {
        matches!(self, Field::NHeads | Field::NKvHeads | Field::DFf | Field::MlpRatio)
    }

    fn kind(self) -> Kind {
        match self {
            Field::MlpRatio => Kind::Ratio,
            Field::Bias | Field::TieEmbeddings => Kind::Bool,
            Field::Ffn => Kind::Ffn,
            Field::Norm => Kind::Norm,
            Field::Pos => Kind::Pos,
            _ => Kind::Int,
        }
    }

    fn all_names() -> String {
        Field::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value of a field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    /// An `mlp_ratio`, which sets `d_ff = ratio × d_model`.
    Ratio(f64),
    Bool(bool),
    Ffn(Ffn),
    Norm(Norm),
    Pos(Pos),
}

impl Value {
    /// Returns the integer of an `Int` value.
    pub fn as_int(self) -> Option<u64> {
        match self {
            Value::Int(v) => Some(v),
            _ => None,
        }
    }

    /// Converts the value to the JSON form of `alphanas space --json`.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            Value::Int(v) => serde_json::json!(v),
            Value::Ratio(r) => serde_json::json!(r),
            Value::Bool(b) => serde_json::json!(b),
            Value::Ffn(x) => serde_json::json!(x.name()),
            Value::Norm(x) => serde_json::json!(x.name()),
            Value::Pos(x) => serde_json::json!(x.name()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Ratio(r) => write!(f, "{r}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Ffn(x) => f.write_str(x.name()),
            Value::Norm(x) => f.write_str(x.name()),
            Value::Pos(x) => f.write_str(x.name()),
        }
    }
}

/// A decision: a field, whether each layer takes it separately, and its choices.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionSpec {
    pub field: Field,
    pub per_layer: bool,
    pub choices: Vec<Value>,
}

/// A derived quantity that a constraint limits, checked on every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintTarget {
    /// Width of one attention head.
    HeadDim,
    NHeads,
    NKvHeads,
    DFf,
    /// Query heads per key/value head, `n_heads / n_kv_heads`.
    GqaGroupSize,
}

impl ConstraintTarget {
    const ALL: [ConstraintTarget; 5] = [
        ConstraintTarget::HeadDim,
        ConstraintTarget::NHeads,
        ConstraintTarget::NKvHeads,
        ConstraintTarget::DFf,
        ConstraintTarget::GqaGroupSize,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConstraintTarget::HeadDim => "head_dim",
            ConstraintTarget::NHeads => "n_heads",
            ConstraintTarget::NKvHeads => "n_kv_heads",
            ConstraintTarget::DFf => "d_ff",
            ConstraintTarget::GqaGroupSize => "gqa_group_size",
        }
    }
}

/// A limit `min ≤ value ≤ max`, optionally with `value % multiple_of == 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Constraint {
    pub target: ConstraintTarget,
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub multiple_of: Option<u64>,
}

impl Constraint {
    /// Checks `value`. The error names the constraint entry and the violated bound.
    pub fn check(&self, value: u64) -> Result<(), String> {
        let name = self.target.name();
        if let Some(min) = self.min {
            if value < min {
                return Err(format!("{name} ({value}) is below constraints.{name}.min ({min})"));
            }
        }
        if let Some(max) = self.max {
            if value > max {
                return Err(format!("{name} ({value}) is above constraints.{name}.max ({max})"));
            }
        }
        if let Some(multiple) = self.multiple_of {
            if !value.is_multiple_of(multiple) {
                return Err(format!(
                    "{name} ({value}) is not a multiple of constraints.{name}.multiple_of ({multiple})"
                ));
            }
        }
        Ok(())
    }
}

/// A parsed and checked space file.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceSpec {
    pub name: String,
    pub description: String,
    /// Values every architecture of the space shares. A field may be both fixed and a
    /// per-layer decision, and then the fixed value is the model-wide one.
    pub fixed: BTreeMap<Field, Value>,
    /// Global decisions first, then per-layer decisions, each group in [`Field`] order.
    pub decisions: Vec<DecisionSpec>,
    pub constraints: Vec<Constraint>,
}

fn invalid(message: String) -> SpaceError {
    SpaceError::Invalid(message)
}

fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Converts one TOML value of `field` at `entry` (such as `decisions.d_model[2]`).
fn parse_value(field: Field, entry: &str, raw: &toml::Value) -> Result<Value, SpaceError> {
    let wrong_type = |expected: &str| {
        invalid(format!("{entry} must be {expected}, found {} ({raw})", type_name(raw)))
    };
    match field.kind() {
        Kind::Int => {
            let v = raw.as_integer().ok_or_else(|| wrong_type("a positive integer"))?;
            if v <= 0 {
                return Err(invalid(format!("{entry} ({v}) must be a positive integer")));
            }
            let v = v as u64;
            if v > MAX_DIM {
                return Err(invalid(format!("{entry} ({v}) exceeds the supported maximum {MAX_DIM}")));
            }
            if field == Field::NLayers && v > MAX_LAYERS {
                return Err(invalid(format!("{entry} ({v}) exceeds the supported maximum depth {MAX_LAYERS}")));
            }
            Ok(Value::Int(v))
        }
        Kind::Ratio => {
            let r = match raw {
                toml::Value::Integer(i) => *i as f64,
                toml::Value::Float(x) => *x,
                _ => return Err(wrong_type("a positive number")),
            };
            if !(r.is_finite() && r > 0.0) {
                return Err(invalid(format!("{entry} ({r}) must be a positive number")));
            }
            Ok(Value::Ratio(r))
        }
        Kind::Bool => raw.as_bool().map(Value::Bool).ok_or_else(|| wrong_type("true or false")),
        Kind::Ffn => match raw.as_str() {
            Some("swiglu") => Ok(Value::Ffn(Ffn::Swiglu)),
            Some("gelu") => Ok(Value::Ffn(Ffn::Gelu)),
            Some("relu") => Ok(Value::Ffn(Ffn::Relu)),
            _ => Err(wrong_type("one of \"swiglu\", \"gelu\", \"relu\"")),
        },
        Kind::Norm => match raw.as_str() {
            Some("rmsnorm") => Ok(Value::Norm(Norm::Rmsnorm)),
            Some("layernorm") => Ok(Value::Norm(Norm::Layernorm)),
            _ => Err(wrong_type("one of \"rmsnorm\", \"layernorm\"")),
        },
        Kind::Pos => match raw.as_str() {
            Some("rope") => Ok(Value::Pos(Pos::Rope)),
            Some("learned") => Ok(Value::Pos(Pos::Learned)),
            Some("none") => Ok(Value::Pos(Pos::None)),
            _ => Err(wrong_type("one of \"rope\", \"learned\", \"none\"")),
        },
    }
}

/// Looks up a field name, or explains which names exist.
fn parse_field(section: &str, key: &str) -> Result<Field, SpaceError> {
    Field::parse(key).ok_or_else(|| {
        invalid(format!(
            "unknown field `{section}.{key}`; use one of {}",
            Field::all_names()
        ))
    })
}

/// Turns a byte offset into a 1-based `line L, column C` for TOML syntax errors.
fn line_column(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// Parses and checks a space file. `default_name` names the space when the file has no
/// `name` key (the file stem, usually).
pub fn parse(text: &str, default_name: &str) -> Result<SpaceSpec, SpaceError> {
    let empty = || {
        invalid("the space file is empty; add a [decisions] table such as `d_model = [256, 512]`, see docs/SPACES.md".into())
    };
    if text.trim().is_empty() {
        return Err(empty());
    }
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| format!(" at {}", line_column(text, s.start))).unwrap_or_default();
        invalid(format!("malformed TOML{at}: {}", e.message().trim().replace('\n', " ")))
    })?;
    if table.is_empty() {
        return Err(empty());
    }

    let mut spec = SpaceSpec {
        name: default_name.to_string(),
        description: String::new(),
        fixed: BTreeMap::new(),
        decisions: Vec::new(),
        constraints: Vec::new(),
    };
    for (key, value) in &table {
        match key.as_str() {
            "name" => {
                spec.name = value
                    .as_str()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| invalid(format!("`name` must be a non-empty string, found {}", type_name(value))))?
                    .to_string();
            }
            "description" => {
                spec.description = value
                    .as_str()
                    .ok_or_else(|| invalid(format!("`description` must be a string, found {}", type_name(value))))?
                    .to_string();
            }
            "fixed" => spec.fixed = parse_fixed(section_table("fixed", value)?)?,
            "decisions" => spec.decisions = parse_decisions(section_table("decisions", value)?)?,
            "constraints" => spec.constraints = parse_constraints(section_table("constraints", value)?)?,
            other => {
                return Err(invalid(format!(
                    "unknown top-level key `{other}`; use name, description, [fixed], [decisions] or [constraints]"
                )))
            }
        }
    }
    check_combination(&spec)?;
    spec.decisions.sort_by_key(|d| (d.per_layer, d.field));
    Ok(spec)
}

fn section_table<'a>(section: &str, value: &'a toml::Value) -> Result<&'a toml::Table, SpaceError> {
    value
        .as_table()
        .ok_or_else(|| invalid(format!("`{section}` must be a table ([{section}]), found {}", type_name(value))))
}

fn parse_fixed(table: &toml::Table) -> Result<BTreeMap<Field, Value>, SpaceError> {
    let mut fixed = BTreeMap::new();
    for (key, raw) in table {
        let field = parse_field("fixed", key)?;
        fixed.insert(field, parse_value(field, &format!("fixed.{key}"), raw)?);
    }
    Ok(fixed)
}

fn parse_decisions(table: &toml::Table) -> Result<Vec<DecisionSpec>, SpaceError> {
    let mut decisions = Vec::new();
    for (key, raw) in table {
        let field = parse_field("decisions", key)?;
        let entry = format!("decisions.{key}");
        let decision = match raw {
            toml::Value::Array(items) => DecisionSpec {
                field,
                per_layer: false,
                choices: parse_list(field, &entry, items)?,
            },
            toml::Value::Table(inner) => parse_decision_table(field, &entry, inner)?,
            other => {
                return Err(invalid(format!(
                    "{entry} must be a list of choices or a table such as {{ start = 2, stop = 8, step = 2 }}, found {}",
                    type_name(other)
                )))
            }
        };
        if decision.per_layer && !field.can_be_per_layer() {
            return Err(invalid(format!(
                "{entry} cannot be per_layer; only n_heads, n_kv_heads, d_ff and mlp_ratio can differ between layers"
            )));
        }
        decisions.push(decision);
    }
    Ok(decisions)
}

fn parse_list(field: Field, entry: &str, items: &[toml::Value]) -> Result<Vec<Value>, SpaceError> {
    if items.is_empty() {
        return Err(invalid(format!("{entry} has no choices; list at least one value")));
    }
    if items.len() > MAX_CHOICES {
        return Err(invalid(format!("{entry} has {} choices, more than the supported {MAX_CHOICES}", items.len())));
    }
    let mut choices: Vec<Value> = Vec::with_capacity(items.len());
    for (i, raw) in items.iter().enumerate() {
        let value = parse_value(field, &format!("{entry}[{i}]"), raw)?;
        if choices.contains(&value) {
            return Err(invalid(format!("{entry} lists {value} twice; remove the duplicate")));
        }
        choices.push(value);
    }
    Ok(choices)
}

fn parse_decision_table(field: Field, entry: &str, table: &toml::Table) -> Result<DecisionSpec, SpaceError> {
    for key in table.keys() {
        if !["values", "start", "stop", "step", "per_layer"].contains(&key.as_str()) {
            return Err(invalid(format!(
                "unknown key `{entry}.{key}`; use values, or start, stop and step, and optionally per_layer"
            )));
        }
    }
    let per_layer = match table.get("per_layer") {
        None => false,
        Some(raw) => raw.as_bool().ok_or_else(|| {
            invalid(format!("{entry}.per_layer must be true or false, found {}", type_name(raw)))
        })?,
    };

    let has_range = ["start", "stop", "step"].iter().any(|k| table.contains_key(*k));
    let choices = match (table.get("values"), has_range) {
        (Some(_), true) => {
            return Err(invalid(format!("{entry} has both values and start/stop/step; keep one of them")))
        }
        (Some(toml::Value::Array(items)), false) => parse_list(field, &format!("{entry}.values"), items)?,
        (Some(other), false) => {
            return Err(invalid(format!("{entry}.values must be a list, found {}", type_name(other))))
        }
        (None, true) => parse_range(field, entry, table)?,
        (None, false) => {
            return Err(invalid(format!(
                "{entry} has no choices; add values = [...] or start, stop and step"
            )))
        }
    };
    Ok(DecisionSpec { field, per_layer, choices })
}

/// Expands `{start, stop, step}` into its values. `stop` is inclusive: the values are
/// `start, start + step, ...` up to and including `stop`.
fn parse_range(field: Field, entry: &str, table: &toml::Table) -> Result<Vec<Value>, SpaceError> {
    let number = |key: &str| -> Result<Option<f64>, SpaceError> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(toml::Value::Float(x)) if field.kind() == Kind::Ratio => Ok(Some(*x)),
            Some(other) => Err(invalid(format!(
                "{entry}.{key} must be {}, found {} ({other})",
                if field.kind() == Kind::Ratio { "a number" } else { "an integer" },
                type_name(other)
            ))),
        }
    };
    if !matches!(field.kind(), Kind::Int | Kind::Ratio) {
        return Err(invalid(format!("{entry} is not numeric, so it takes a list of values, not start/stop/step")));
    }

    let start = number("start")?.ok_or_else(|| invalid(format!("{entry} is missing `start`")))?;
    let stop = number("stop")?.ok_or_else(|| invalid(format!("{entry} is missing `stop`")))?;
    let step = number("step")?.unwrap_or(1.0);
    if step <= 0.0 {
        return Err(invalid(format!("{entry}.step ({step}) must be positive")));
    }
    if start > stop {
        return Err(invalid(format!("{entry}.start ({start}) is above stop ({stop}); swap them")));
    }

    // The small tolerance keeps a float stop such as 4.0 reachable from 2.0 in steps of 0.1.
    let steps = ((stop - start) / step + 1e-9).floor();
    if steps + 1.0 > MAX_CHOICES as f64 {
        return Err(invalid(format!(
            "{entry} expands to {:.3e} choices, more than the supported {MAX_CHOICES}; use a larger step",
            steps + 1.0
        )));
    }

    let items: Vec<toml::Value> = (0..=steps as u64)
        .map(|k| {
            let x = start + k as f64 * step;
            match field.kind() {
                Kind::Int => toml::Value::Integer(x.round() as i64),
                _ => toml::Value::Float((x * 1e9).round() / 1e9),
            }
        })
        .collect();
    parse_list(field, entry, &items)
}

fn parse_constraints(table: &toml::Table) -> Result<Vec<Constraint>, SpaceError> {
    let mut out = Vec::new();
    for (key, raw) in table {
        let target = ConstraintTarget::ALL.into_iter().find(|t| t.name() == key).ok_or_else(|| {
            invalid(format!(
                "unknown constraint `constraints.{key}`; use head_dim, n_heads, n_kv_heads, d_ff or gqa_group_size"
            ))
        })?;
        let entry = format!("constraints.{key}");
        let inner = raw.as_table().ok_or_else(|| {
            invalid(format!("{entry} must be a table such as {{ min = 32, max = 128 }}, found {}", type_name(raw)))
        })?;
        let mut constraint = Constraint { target, min: None, max: None, multiple_of: None };
        for (bound, value) in inner {
            let v = value.as_integer().filter(|v| *v > 0).ok_or_else(|| {
                invalid(format!("{entry}.{bound} must be a positive integer, found {value}"))
            })? as u64;
            match bound.as_str() {
                "min" => constraint.min = Some(v),
                "max" => constraint.max = Some(v),
                "multiple_of" => constraint.multiple_of = Some(v),
                other => {
                    return Err(invalid(format!(
                        "unknown key `{entry}.{other}`; use min, max or multiple_of"
                    )))
                }
            }
        }
        if inner.is_empty() {
            return Err(invalid(format!("{entry} is empty; give min, max or multiple_of")));
        }
        if let (Some(min), Some(max)) = (constraint.min, constraint.max) {
            if min > max {
                return Err(invalid(format!("{entry}.min ({min}) is above {entry}.max ({max}); swap them")));
            }
        }
        out.push(constraint);
    }
    Ok(out)
}

/// Checks rules that involve several entries: required fields, conflicts, and per-layer
/// head counts that need a model-wide head width.
fn check_combination(spec: &SpaceSpec) -> Result<(), SpaceError> {
    let decided = |field: Field| spec.decisions.iter().find(|d| d.field == field);
    let global_decision = |field: Field| decided(field).is_some_and(|d| !d.per_layer);
    let present = |field: Field| spec.fixed.contains_key(&field) || decided(field).is_some();

    for field in Field::ALL {
        if spec.fixed.contains_key(&field) && global_decision(field) {
            return Err(invalid(format!(
                "{field} is both under [fixed] and [decisions]; keep one (a fixed value next to a per-layer decision is allowed)"
            )));
        }
    }
    for field in [Field::NLayers, Field::DModel, Field::NHeads] {
        if !present(field) {
            return Err(invalid(format!(
                "missing {field}; fix it under [fixed] or list its choices under [decisions]"
            )));
        }
    }
    match (present(Field::DFf), present(Field::MlpRatio)) {
        (false, false) => {
            return Err(invalid(
                "missing d_ff; give d_ff or mlp_ratio (d_ff = mlp_ratio × d_model) under [fixed] or [decisions]".into(),
            ))
        }
        (true, true) => {
            return Err(invalid(
                "both d_ff and mlp_ratio are given; keep one, because mlp_ratio sets d_ff = mlp_ratio × d_model".into(),
            ))
        }
        _ => {}
    }
    let per_layer_heads = decided(Field::NHeads).is_some_and(|d| d.per_layer);
    if per_layer_heads && !present(Field::HeadDim) && !spec.fixed.contains_key(&Field::NHeads) {
        return Err(invalid(
            "n_heads is a per-layer decision, so the model-wide head width must be set: fix head_dim (for example head_dim = 64) or a model-wide n_heads (head_dim = d_model / n_heads) under [fixed]".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_stop_is_inclusive() {
        let spec = parse(
            "[decisions]\nn_layers = { start = 2, stop = 8, step = 3 }\nd_model = [64]\nn_heads = [2]\nd_ff = [64]\n",
            "t",
        )
        .unwrap();
        let layers = spec.decisions.iter().find(|d| d.field == Field::NLayers).unwrap();
        assert_eq!(layers.choices, vec![Value::Int(2), Value::Int(5), Value::Int(8)]);
    }

    #[test]
    fn float_range_reaches_stop() {
        let spec = parse(
            "[fixed]\nn_layers = 2\nd_model = 64\nn_heads = 2\n[decisions]\nmlp_ratio = { start = 2.0, stop = 3.0, step = 0.1 }\n",
            "t",
        )
        .unwrap();
        let ratios = &spec.decisions[0].choices;
        assert_eq!(ratios.len(), 11);
        assert_eq!(ratios[10], Value::Ratio(3.0));
    }

    #[test]
    fn syntax_error_has_location() {
        let err = parse("[decisions\nd_model = [1]", "t").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
