//! `backstop`: flags in, library call, exit code out.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "backstop",
    version,
    about = "backstop's controller and CLI",
    long_about = "backstop's controller and CLI. Today: the feature schema the agent's windows \
                  follow. The daemon (`backstop serve`) and deployments come next; see README.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the feature schema: every window value's name, unit and meaning, in order.
    Schema {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Schema { json } => {
            if json {
                println!("{}", backstop_controller::schema::to_json());
            } else {
                print!("{}", backstop_controller::schema::to_table());
            }
        }
    }
    ExitCode::SUCCESS
}
