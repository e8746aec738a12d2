use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = alphanas::cli::Cli::parse();
    match alphanas::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, so scripts and people both read the cause.
            let text = err.to_string().replace('\n', " ");
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}
