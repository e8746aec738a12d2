use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `alphanas ... | head` would panic on the closed pipe. Restore
    // the default action so the process ends quietly, as other command-line tools do.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }

    let mut cli = alphanas::cli::Cli::parse();
    // Kept only when every argument is UTF-8 text; `search` stores them for `--resume`.
    if let Ok(argv) = std::env::args_os().skip(1).map(|a| a.into_string()).collect::<Result<Vec<String>, _>>() {
        cli.global.argv = argv;
    }
    match alphanas::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(alphanas::Error::Interrupted(text)) => {
            // 128 + SIGINT, as shells report a command stopped by Ctrl-C.
            eprintln!("{text}");
            ExitCode::from(130)
        }
        Err(err) => {
            // One line, so scripts and people both read the cause.
            let text = err.to_string().replace('\n', " ");
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}
