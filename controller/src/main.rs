//! `backstop`: flags in, library call, exit code out.

mod cli;
mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // The model's matrix products are small: one thread is much faster
    // than candle's pool (and the inference target is per core).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    // `serve` lets its config file set DATA unless a flag or
    // BACKSTOP_DATA did: only clap knows whether the default was used.
    let data_given = matches
        .value_source("data")
        .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue);
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if !matches!(cli.command, Command::Serve(_)) {
        // A report piped into `head` ends quietly, as other Unix tools do,
        // instead of panicking in println!. The daemon keeps Rust's
        // default (ignored), so a dropped database connection is an error.
        // SAFETY: no other thread exists yet; SIG_DFL is a valid handler.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: logs kept in files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("backstop: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(dispatch(cli.data, data_given, cli.command));
    exit_code(result)
}

/// The one dispatch: each verb is a file in `commands/`.
async fn dispatch(data: PathBuf, data_given: bool, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Init { host, names } => commands::init::run(&data, host, &names).await,
        Command::Enroll {
            host,
            out,
            valid_days,
            force,
        } => commands::enroll::run(&data, &host, &out, valid_days, force).await,
        Command::Revoke { host } => commands::revoke::run(&data, &host).await,
        Command::Serve(args) => commands::serve::run(data_given.then_some(data), args).await,
        Command::Exec {
            host,
            timeout,
            window_ms,
            json,
            cmd,
        } => commands::exec::run(&data, &host, cmd, window_ms, json, timeout).await,
        Command::Deploy {
            file,
            host,
            wait,
            dry_run,
            json,
            window_ms,
        } => {
            let args = commands::deploy::DeployArgs {
                file: &file,
                host: &host,
                wait,
                dry_run,
                json,
                window_ms,
            };
            commands::deploy::run(&data, args).await
        }
        Command::Show { id, json, database } => {
            commands::deploy::show(&data, database, &id, json).await
        }
        Command::Cancel { id, force } => commands::deploy::cancel(&data, &id, force).await,
        Command::Replay { id, json, database } => {
            commands::replay::run(&data, database, &id, json).await
        }
        Command::Report { id, json, database } => {
            commands::report::run(&data, database, &id, json).await
        }
        Command::Hosts { json, database } => commands::read::hosts(&data, database, json).await,
        Command::Deployments { json, database } => {
            commands::read::deployments(&data, database, json).await
        }
        Command::Windows { id, json, database } => {
            commands::read::windows(&data, database, &id, json).await
        }
        Command::Events { id, json, database } => {
            commands::read::events(&data, database, &id, json).await
        }
        Command::Train {
            corpus,
            out,
            training,
            expect_digest,
            json,
        } => commands::train::run(&corpus, &out, &training.config()?, expect_digest, json),
        Command::Crossval {
            corpus,
            folds,
            by_family,
            training,
            json,
        } => commands::crossval::run(&corpus, &training.config()?, folds, by_family, json),
        Command::Eval {
            model,
            corpus,
            lockbox,
            all,
            json,
        } => commands::eval::run(&model, &corpus, (lockbox, all), json),
        Command::Corpus { action } => commands::corpus::run(action),
        Command::BenchPredict { model, calls } => commands::bench_predict::run(&model, calls),
        Command::BenchDecide { model, installs } => {
            commands::bench_decide::run(&model, installs).await
        }
        Command::Model { json } => commands::model::run(&data, json),
        Command::Schema { json } => commands::schema::run(json),
        Command::Manifest { action } => commands::manifest::run(action),
    }
}

/// The exit code of a verb's result; an error is printed as one line.
fn exit_code(result: anyhow::Result<i32>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            // One line: the context chain. An exit-code marker is always
            // the outermost context and carries no words of its own.
            let exit = e.downcast_ref::<commands::Exit>().map(|x| x.0);
            let msg: Vec<String> = e
                .chain()
                .skip(usize::from(exit.is_some()))
                .map(std::string::ToString::to_string)
                .collect();
            eprintln!("backstop: {}", msg.join(": "));
            ExitCode::from(exit.unwrap_or(1).clamp(0, 255) as u8)
        }
    }
}
