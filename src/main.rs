use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use latchkey::clock::SystemClock;
use latchkey::config::Settings;
use latchkey::startup::Application;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Latchkey: a self-hosted accounts server for passwordless sign-in with one-time codes.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Path to latchkey.toml (every key can also be set with a LATCHKEY_* variable).
    #[arg(long, env = "LATCHKEY_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// The token signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Replace every signing key with a new one: published at once, signing after
    /// `--activate-in-secs`; the old keys stay published until their last token has expired.
    /// Running instances pick the change up within `signing_keys_reload_secs`.
    ///
    /// Example: latchkey --config /etc/latchkey.toml keys rotate --activate-in-secs 0
    Rotate {
        /// Seconds before the new keys sign (apps that cache the key set see them first).
        #[arg(long, default_value_t = 300)]
        activate_in_secs: u32,
    },
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("latchkey: {e:#}");
            std::process::exit(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            latchkey::telemetry::init(settings.log_json);
            let app = Application::build(settings, Arc::new(SystemClock)).await?;
            app.run_until_stopped().await?;
        }
        Command::Keys {
            action: KeysAction::Rotate { activate_in_secs },
        } => {
            let activate_in = time::Duration::seconds(i64::from(activate_in_secs));
            match latchkey::startup::rotate_signing_keys(&settings, activate_in).await {
                Ok(fresh) => {
                    for (alg, kid) in fresh {
                        println!("{alg}\t{kid}\tsigning in {activate_in_secs} s");
                    }
                }
                Err(e) => {
                    eprintln!("latchkey keys rotate: {e:#}");
                    std::process::exit(1);
                }
            }
        }
    }
    Ok(())
}
