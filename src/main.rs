use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
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
    #[arg(long, env = "LATCHKEY_CONFIG")]
    config: Option<PathBuf>,
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
    latchkey::telemetry::init(settings.log_json);
    let app = Application::build(settings, Arc::new(SystemClock)).await?;
    app.run_until_stopped().await?;
    Ok(())
}
