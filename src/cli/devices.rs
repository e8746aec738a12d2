//! `alphanas devices`: GPU adapters and the CPU, marking the one selected.

use super::Global;
use crate::device::{list_adapters, BackendChoice};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args, global: &Global) -> crate::Result<()> {
    let rows = list_adapters(global.backend);
    if global.json {
        return super::print_json(&rows);
    }

    let gpu_count = rows.iter().filter(|r| r.backend != "cpu").count();
    if gpu_count == 0 && global.backend != BackendChoice::Cpu {
        log::warn!("no GPU adapter found; the CPU backend will be used");
    }
    println!(
        "{:<3}{:<40}{:<8}{:<11}{:<5}{:<11}{:<10}{:>14}",
        "", "name", "backend", "type", "f16", "timestamps", "subgroups", "max binding"
    );
    for row in &rows {
        let mark = if row.selected { "*" } else { "" };
        let binding = row
            .limits
            .as_ref()
            .map(|l| format!("{} MiB", l.max_storage_buffer_binding_size >> 20))
            .unwrap_or_else(|| format!("{} threads", row.threads.unwrap_or(1)));
        let subgroups = match row.subgroup_size {
            Some((lo, hi)) if lo == hi => format!("{lo}"),
            Some((lo, hi)) => format!("{lo}-{hi}"),
            None => "no".into(),
        };
        println!(
            "{:<3}{:<40}{:<8}{:<11}{:<5}{:<11}{:<10}{:>14}",
            mark,
            truncate(&row.name, 38),
            row.backend,
            row.device_type,
            yes_no(row.f16),
            yes_no(row.timestamp_query),
            subgroups,
            binding
        );
    }
    if let Some(emulated) = rows.iter().find(|r| r.selected && r.backend != "cpu" && r.device_type == "cpu") {
        if global.backend == BackendChoice::Auto {
            println!(
                "note: {} emulates a GPU on the processor, so with --backend auto the commands that measure or score (bench, profile, validate-cost, search) use the CPU kernels instead; --backend gpu selects it",
                emulated.name
            );
        }
    }
    Ok(())
}

fn yes_no(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        text.chars().take(max - 1).collect::<String>() + "…"
    }
}
