//! `alphanas surrogate fit|predict|eval|cv`: trains, applies and scores surrogate ensembles on
//! any table of features.

use std::path::PathBuf;

use super::{BackendChoice, Global};
use crate::surrogate::data::{InputSpec, Table};
use crate::surrogate::metrics::{cross_validate, format_table, TargetMetrics};
use crate::surrogate::ols::LinearModel;
use crate::surrogate::{open_gpu, WeightPrecision};
use crate::surrogate::{Activation, Ensemble, EnsembleConfig, Scorer, SurrogateError};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Fit an ensemble to a table and write the model as JSON.
    Fit(FitArgs),
    /// Predict every row of a table and write the means and standard deviations as CSV.
    Predict(PredictArgs),
    /// Score a model's predictions on a table (MAE, MAPE, ±10%, Kendall τ, Spearman ρ,
    /// calibration).
    Eval(EvalArgs),
    /// Cross-validate the ensemble and least squares on a table.
    Cv(CvArgs),
}

/// Selection of the data file's rows.
#[derive(Debug, Clone, clap::Args)]
pub struct RowSelection {
    /// Table of observations: CSV with a header, or JSON lines (`.jsonl`).
    #[arg(long)]
    pub data: PathBuf,

    /// Keep only rows whose column equals a value, as COL=VALUE (applied before --rows).
    #[arg(long, value_name = "COL=VALUE")]
    pub filter: Option<String>,

    /// Row range A..B (0-based, B exclusive; either end may be left out), counted after
    /// --filter.
    #[arg(long, value_name = "A..B")]
    pub rows: Option<String>,
}

/// Feature and target columns, and training settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Target column(s) to predict, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub target: Vec<String>,

    /// Feature columns, comma-separated; non-numeric columns are one-hot encoded.
    #[arg(long, value_delimiter = ',', conflicts_with = "arch_features")]
    pub features: Vec<String>,

    /// Encode architectures into features (an `arch` column of JSON, or architecture columns).
    #[arg(long)]
    pub arch_features: bool,

    /// Fit targets in log space: all of them, or the comma-separated ones given.
    #[arg(long, num_args = 0..=1, value_name = "COLS")]
    pub log_target: Option<Option<String>>,

    /// Number of MLPs in the ensemble.
    #[arg(long, default_value_t = EnsembleConfig::default().members)]
    pub members: usize,

    /// Hidden layer widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,64")]
    pub hidden: Vec<usize>,

    /// Activation between hidden layers.
    #[arg(long, value_enum, default_value_t = Activation::default())]
    pub activation: Activation,

    /// Maximum training epochs per member.
    #[arg(long, default_value_t = EnsembleConfig::default().epochs)]
    pub epochs: usize,

    /// Rows per mini-batch.
    #[arg(long, default_value_t = EnsembleConfig::default().batch_size)]
    pub batch_size: usize,

    /// Adam learning rate.
    #[arg(long, allow_negative_numbers = true, default_value_t = EnsembleConfig::default().lr)]
    pub lr: f64,

    /// Decoupled weight decay (AdamW), as a multiple of the learning rate.
    #[arg(long, allow_negative_numbers = true, default_value_t = EnsembleConfig::default().weight_decay)]
    pub weight_decay: f64,

    /// Epochs without improvement on the held-out split before a member stops.
    #[arg(long, default_value_t = EnsembleConfig::default().patience)]
    pub patience: usize,

    /// Share of rows each member holds out for early stopping.
    #[arg(long, allow_negative_numbers = true, default_value_t = EnsembleConfig::default().val_fraction)]
    pub val_fraction: f64,

    /// Seed of all random choices; the same seed gives the same model on any thread count.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Report the members' spread as it is. By default it is scaled per target so that about
    /// 95% of out-of-bag residuals lie within ±2 spreads.
    #[arg(long)]
    pub raw_spread: bool,
}

#[derive(Debug, clap::Args)]
pub struct FitArgs {
    #[command(flatten)]
    pub selection: RowSelection,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output path of the model JSON.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// Model JSON written by `surrogate fit`.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub selection: RowSelection,
    /// Output path of the predictions CSV (`row`, then `<target>_mean`, `<target>_std`).
    #[arg(long)]
    pub out: PathBuf,
    /// Storage precision of the weights when scoring on the GPU (f16 halves their bytes; sums
    /// stay f32). The CPU path always uses the f32 weights.
    #[arg(long, value_enum, default_value = "f32")]
    pub gpu_weights: WeightPrecision,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Model JSON written by `surrogate fit`.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub selection: RowSelection,
    /// Also fit least squares on this row range A..B of --data (after --filter), with the
    /// model's features and targets, and score it on the same rows as the model.
    #[arg(long, value_name = "A..B")]
    pub ols_fit_rows: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CvArgs {
    #[command(flatten)]
    pub selection: RowSelection,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of folds.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// A column to score as a ranking proxy: its Kendall τ and Spearman ρ against each target
    /// are reported (negative when the target falls as the proxy rises).
    #[arg(long)]
    pub proxy: Option<String>,
}

pub fn run(args: &Args, global: &Global) -> crate::Result<()> {
    match &args.command {
        Command::Fit(a) => run_fit(a, global),
        Command::Predict(a) => run_predict(a, global),
        Command::Eval(a) => run_eval(a, global),
        Command::Cv(a) => run_cv(a, global),
    }
}

fn run_fit(args: &FitArgs, global: &Global) -> crate::Result<()> {
    // Before training, so a bad --out cannot cost the fit.
    crate::error::create_parent_dir(&args.out)?;
    let (table, _) = load_rows(&args.selection)?;
    let (spec, x, y, cfg) = prepare_training(&table, &args.model)?;
    let mut model = Ensemble::fit(&x, &y, spec.feature_names(), args.model.target.clone(), &cfg)?;
    model.set_input_spec(spec)?;
    model.save(&args.out)?;

    let prediction = model.predict(&flatten(&x), x.len());
    let metrics = score_prediction(&model, &prediction, &y);
    if global.json {
        super::print_json(&serde_json::json!({ "model": args.out, "rows": x.len(), "training_metrics": metrics }))?;
    } else {
        println!(
            "wrote {} ({}, {}, {})",
            args.out.display(),
            super::plural(cfg.members, "member", "members"),
            super::plural(model.n_features(), "feature", "features"),
            super::plural(x.len(), "training row", "training rows")
        );
        let rows: Vec<(String, TargetMetrics)> = metrics.into_iter().map(|m| ("train".to_string(), m)).collect();
        print!("{}", format_table(&rows));
    }
    Ok(())
}

fn run_predict(args: &PredictArgs, global: &Global) -> crate::Result<()> {
    let model = Ensemble::load(&args.model)?;
    let (table, source_rows) = load_rows(&args.selection)?;
    let x = encode_for_model(&model, &table)?;
    let prediction = make_scorer(&model, global, args.gpu_weights)?.score(&flatten(&x), x.len())?;

    crate::error::create_parent_dir(&args.out)?;
    let mut writer = csv::Writer::from_path(&args.out).map_err(|e| SurrogateError::Invalid(format!("failed to write {}: {e}", args.out.display())))?;
    let mut header = vec!["row".to_string()];
    for name in model.target_names() {
        header.push(format!("{name}_mean"));
        header.push(format!("{name}_std"));
    }
    let write_error = |e: csv::Error| SurrogateError::Invalid(format!("failed to write {}: {e}", args.out.display()));
    writer.write_record(&header).map_err(write_error)?;
    for (i, source_row) in source_rows.iter().enumerate() {
        let mut record = vec![source_row.to_string()];
        for k in 0..model.n_targets() {
            record.push(prediction.mean_at(i, k).to_string());
            record.push(prediction.std_at(i, k).to_string());
        }
        writer.write_record(&record).map_err(write_error)?;
    }
    writer.flush().map_err(|e| crate::Error::io(format!("failed to write {}", args.out.display()), e))?;
    if !global.json {
        println!("wrote {} predictions to {}", source_rows.len(), args.out.display());
    }
    Ok(())
}

fn run_eval(args: &EvalArgs, global: &Global) -> crate::Result<()> {
    let model = Ensemble::load(&args.model)?;
    let (table, _) = load_rows(&args.selection)?;
    let x = encode_for_model(&model, &table)?;
    let y = target_rows(&table, model.target_names())?;
    let prediction = make_scorer(&model, global, WeightPrecision::F32)?.score(&flatten(&x), x.len())?;
    let mut rows: Vec<(String, TargetMetrics)> = score_prediction(&model, &prediction, &y).into_iter().map(|m| ("ensemble".to_string(), m)).collect();

    if let Some(range) = &args.ols_fit_rows {
        let fit_selection = RowSelection { rows: Some(range.clone()), ..args.selection.clone() };
        let (fit_table, _) = load_rows_as(&fit_selection, "--ols-fit-rows")?;
        let linear = LinearModel::fit(&encode_for_model(&model, &fit_table)?, &target_rows(&fit_table, model.target_names())?)?;
        let predicted: Vec<Vec<f64>> = x.iter().map(|row| linear.predict_row(row)).collect();
        for (k, name) in model.target_names().iter().enumerate() {
            let p: Vec<f64> = predicted.iter().map(|r| r[k]).collect();
            let a: Vec<f64> = y.iter().map(|r| r[k]).collect();
            rows.push(("ols".to_string(), TargetMetrics::compute(name, &p, None, &a)));
        }
    }
    print_metrics(&rows, global)
}

fn run_cv(args: &CvArgs, global: &Global) -> crate::Result<()> {
    let (table, _) = load_rows(&args.selection)?;
    let (spec, x, y, cfg) = prepare_training(&table, &args.model)?;
    let targets = &args.model.target;
    let result = cross_validate(&x, &y, &spec.feature_names(), targets, &cfg, args.folds).map_err(|e| match e {
        crate::Error::Surrogate(SurrogateError::Invalid(message)) => crate::Error::Surrogate(SurrogateError::Invalid(with_option_names(&message))),
        other => other,
    })?;

    let mut rows = Vec::new();
    for (k, name) in targets.iter().enumerate() {
        let actual: Vec<f64> = y.iter().map(|r| r[k]).collect();
        let mean: Vec<f64> = result.mean.iter().map(|r| r[k]).collect();
        let std: Vec<f64> = result.std.iter().map(|r| r[k]).collect();
        let ols: Vec<f64> = result.ols.iter().map(|r| r[k]).collect();
        rows.push(("ensemble".to_string(), TargetMetrics::compute(name, &mean, Some(&std), &actual)));
        rows.push(("ols".to_string(), TargetMetrics::compute(name, &ols, None, &actual)));
        if let Some(proxy) = &args.proxy {
            let values = table.numeric_column(proxy)?;
            rows.push((format!("proxy:{proxy}"), TargetMetrics::ranking_only(name, &values, &actual)));
        }
    }
    if !global.json {
        println!("{}-fold cross-validation on {} rows (out-of-fold predictions pooled)", args.folds, x.len());
    }
    print_metrics(&rows, global)
}

fn print_metrics(rows: &[(String, TargetMetrics)], global: &Global) -> crate::Result<()> {
    if global.json {
        let objects: Vec<serde_json::Value> = rows
            .iter()
            .map(|(model, m)| {
                let mut value = serde_json::to_value(m).unwrap_or_default();
                value["model"] = serde_json::Value::String(model.clone());
                value
            })
            .collect();
        super::print_json(&objects)
    } else {
        print!("{}", format_table(rows));
        Ok(())
    }
}

/// The feature encoding, feature rows, target rows and config of a fit.
type Training = (InputSpec, Vec<Vec<f64>>, Vec<Vec<f64>>, EnsembleConfig);

/// Builds the feature encoding, features, targets and config of a fit or cross-validation.
fn prepare_training(table: &Table, args: &ModelArgs) -> crate::Result<Training> {
    check_column_lists(&args.target, &args.features)?;
    let spec = if args.arch_features {
        InputSpec::Arch
    } else if args.features.is_empty() {
        return Err(SurrogateError::Invalid("no features chosen; pass --features COL,COL or --arch-features".into()).into());
    } else {
        InputSpec::from_table(table, &args.features)?
    };
    let x = spec.encode(table)?;
    let y = target_rows(table, &args.target)?;

    let log_targets = match &args.log_target {
        None => Vec::new(),
        Some(None) => vec![true; args.target.len()],
        Some(Some(list)) => {
            let chosen: Vec<&str> = list.split(',').map(str::trim).collect();
            if let Some((i, name)) = chosen.iter().enumerate().find(|(i, name)| chosen[..*i].contains(name)) {
                return Err(SurrogateError::Invalid(format!("--log-target names `{name}` twice (position {}); name each target once", i + 1)).into());
            }
            if let Some(unknown) = chosen.iter().find(|c| !args.target.iter().any(|t| t == *c)) {
                return Err(SurrogateError::Invalid(format!("--log-target names `{unknown}`, which is not a --target column ({})", args.target.join(","))).into());
            }
            args.target.iter().map(|t| chosen.contains(&t.as_str())).collect()
        }
    };
    let cfg = EnsembleConfig {
        members: args.members,
        hidden: args.hidden.clone(),
        activation: args.activation,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        patience: args.patience,
        val_fraction: args.val_fraction,
        seed: args.seed,
        log_targets,
        bootstrap: true,
        calibrate_spread: !args.raw_spread,
    };
    cfg.validate(args.target.len()).map_err(|e| match e {
        SurrogateError::Invalid(message) => SurrogateError::Invalid(with_option_names(&message)),
        other => other,
    })?;
    Ok((spec, x, y, cfg))
}

/// Replaces the settings field that starts a validation message, such as `batch_size (0)`,
/// with the option that sets it, `--batch-size (0)`.
fn with_option_names(message: &str) -> String {
    const OPTIONS: [(&str, &str); 8] = [
        ("members", "--members"),
        ("batch_size", "--batch-size"),
        ("lr", "--lr"),
        ("weight_decay", "--weight-decay"),
        ("val_fraction", "--val-fraction"),
        ("hidden layer", "--hidden: layer"),
        ("folds", "--folds"),
        ("epochs", "--epochs"),
    ];
    for (field, option) in OPTIONS {
        if let Some(rest) = message.strip_prefix(field).filter(|rest| rest.starts_with(' ')) {
            return format!("{option}{rest}");
        }
    }
    message.to_string()
}

/// Reads the data file and applies --filter and --rows. Returns the rows kept and their
/// 0-based indices among the file's data rows.
fn load_rows(selection: &RowSelection) -> crate::Result<(Table, Vec<usize>)> {
    load_rows_as(selection, "--rows")
}

/// [`load_rows`] for a row range given by `rows_option`, which its errors name.
fn load_rows_as(selection: &RowSelection, rows_option: &str) -> crate::Result<(Table, Vec<usize>)> {
    let table = Table::read(&selection.data)?;
    if table.is_empty() {
        return Err(SurrogateError::Invalid(format!("{} has no data rows", selection.data.display())).into());
    }
    let mut indices: Vec<usize> = (0..table.len()).collect();

    if let Some(filter) = &selection.filter {
        let (column, value) = filter.split_once('=').ok_or_else(|| SurrogateError::Invalid(format!("--filter `{filter}` must be COL=VALUE")))?;
        indices = table.matching_rows(column.trim(), value.trim())?;
    }
    if let Some(range) = &selection.rows {
        let (start, end) = parse_range(range, indices.len()).map_err(|e| SurrogateError::Invalid(format!("{rows_option}: {e}")))?;
        indices = indices[start..end].to_vec();
    }
    if indices.is_empty() {
        return Err(SurrogateError::Invalid(format!("no rows of {} are selected; check --filter and {rows_option}", selection.data.display())).into());
    }
    Ok((table.take_rows(&indices), indices))
}

/// Parses `A..B`, `A..` or `..B` against a table of `len` rows.
fn parse_range(text: &str, len: usize) -> Result<(usize, usize), SurrogateError> {
    let invalid = || SurrogateError::Invalid(format!("row range `{text}` must look like A..B, A.. or ..B with 0-based row numbers"));
    let (a, b) = text.split_once("..").ok_or_else(invalid)?;
    let start = if a.trim().is_empty() { 0 } else { a.trim().parse().map_err(|_| invalid())? };
    let end = if b.trim().is_empty() { len } else { b.trim().parse::<usize>().map_err(|_| invalid())? };
    if end > len {
        return Err(SurrogateError::Invalid(format!(
            "row range `{text}` ends at row {end}, but only {len} rows are available (after --filter); end it at {len} or leave the end open, as in `{}..`",
            a.trim()
        )));
    }
    if start >= end {
        return Err(SurrogateError::Invalid(format!("row range `{text}` selects no rows of the {len} available")));
    }
    Ok((start, end))
}

/// Encodes a table with the model's stored input encoding.
fn encode_for_model(model: &Ensemble, table: &Table) -> crate::Result<Vec<Vec<f64>>> {
    let spec = model.input_spec().ok_or_else(|| SurrogateError::Invalid("the model has no table encoding (it was fitted through the library API); encode the features yourself".into()))?;
    Ok(spec.encode(table)?)
}

/// Rejects a column named twice in `--target` or in `--features`, and a target that is also a
/// feature, which would hand the model the value it is asked to predict.
fn check_column_lists(targets: &[String], features: &[String]) -> crate::Result<()> {
    for (option, names) in [("--target", targets), ("--features", features)] {
        if let Some(i) = names.iter().position(|name| name.trim().is_empty()) {
            return Err(SurrogateError::Invalid(format!("{option} has an empty column name (position {}); list column names separated by commas", i + 1)).into());
        }
        if let Some((i, name)) = names.iter().enumerate().find(|(i, name)| names[..*i].contains(name)) {
            return Err(SurrogateError::Invalid(format!("{option} names `{name}` twice (position {}); name each column once", i + 1)).into());
        }
    }
    if let Some(name) = targets.iter().find(|t| features.contains(t)) {
        return Err(SurrogateError::Invalid(format!(
            "`{name}` is both a --target and a --features column, so the model would read the value it predicts; drop it from --features"
        ))
        .into());
    }
    Ok(())
}

fn target_rows(table: &Table, targets: &[String]) -> crate::Result<Vec<Vec<f64>>> {
    let columns: Vec<Vec<f64>> = targets.iter().map(|t| table.numeric_column(t)).collect::<Result<_, _>>()?;
    Ok((0..table.len()).map(|r| columns.iter().map(|c| c[r]).collect()).collect())
}

fn flatten(x: &[Vec<f64>]) -> Vec<f32> {
    x.iter().flatten().map(|&v| v as f32).collect()
}

fn score_prediction(model: &Ensemble, prediction: &crate::surrogate::Prediction, y: &[Vec<f64>]) -> Vec<TargetMetrics> {
    model
        .target_names()
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let mean: Vec<f64> = (0..prediction.n).map(|r| f64::from(prediction.mean_at(r, k))).collect();
            let std: Vec<f64> = (0..prediction.n).map(|r| f64::from(prediction.std_at(r, k))).collect();
            let actual: Vec<f64> = y.iter().map(|r| r[k]).collect();
            TargetMetrics::compute(name, &mean, Some(&std), &actual)
        })
        .collect()
}

/// Builds the scorer the global --backend selects, with `precision` weights on the GPU. `auto`
/// takes a hardware GPU when there is one; a software adapter (such as lavapipe) is slower than
/// the CPU path, so `auto` skips it.
fn make_scorer(model: &Ensemble, global: &Global, precision: WeightPrecision) -> crate::Result<Box<dyn Scorer>> {
    match global.backend {
        BackendChoice::Cpu => Ok(Box::new(model.cpu_scorer())),
        BackendChoice::Gpu => Ok(Box::new(model.gpu_scorer_with(&*open_gpu()?, precision)?)),
        BackendChoice::Auto => match open_gpu() {
            Ok(context) if context.info.device_type != wgpu::DeviceType::Cpu => Ok(Box::new(model.gpu_scorer_with(&context, precision)?)),
            Ok(context) => {
                log::warn!("the only GPU adapter is the software one {}; scoring on the CPU", context.info.name);
                Ok(Box::new(model.cpu_scorer()))
            }
            Err(e) => {
                log::warn!("{e}; scoring on the CPU");
                Ok(Box::new(model.cpu_scorer()))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ranges_stay_within_the_table() {
        assert_eq!(parse_range("2..5", 8).unwrap(), (2, 5));
        assert_eq!(parse_range("3..", 8).unwrap(), (3, 8));
        assert_eq!(parse_range("..8", 8).unwrap(), (0, 8));
        let beyond = parse_range("..100", 8).unwrap_err().to_string();
        assert!(beyond.contains("only 8 rows are available"), "{beyond}");
        let empty = parse_range("5..5", 8).unwrap_err().to_string();
        assert!(empty.contains("selects no rows"), "{empty}");
        assert!(parse_range("a..3", 8).is_err());
    }

    #[test]
    fn validation_messages_name_options() {
        assert_eq!(with_option_names("batch_size (0) must be at least 1"), "--batch-size (0) must be at least 1");
        assert_eq!(with_option_names("hidden layer 1 has width 0"), "--hidden: layer 1 has width 0");
        assert_eq!(with_option_names("lrx (1) is unknown"), "lrx (1) is unknown");
    }
}
