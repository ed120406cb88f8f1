//! The command line: `cronflow serve | worker | migrate | openapi | keys create | audit verify`.

use crate::{Application, Settings, config::ConfigError, shutdown, startup::connect_and_migrate, telemetry};
use clap::{Parser, Subcommand, ValueEnum};
use cronflow_jobs::{
    Clock, SystemClock,
    domain::{NewApiKey, Scope, audit_chain::Verdict},
    store::ChangedBy,
};
use secrecy::ExposeSecret;
use std::{path::PathBuf, process::ExitCode, sync::Arc};
use tokio_util::sync::CancellationToken;

/// Exit status for an unusable configuration (as for a command-line usage error).
const EXIT_CONFIG: u8 = 2;

/// CronFlow: scheduled jobs that fire on time, exactly once, and signed webhooks that
/// tell other systems how they went.
///
/// With nothing configured, `cronflow serve` keeps its data in ./cronflow.db (SQLite),
/// the key that encrypts its webhook signing secrets in ./cronflow.db.key (back it up,
/// apart from the database), and listens on 127.0.0.1:8080. With Postgres, set
/// CRONFLOW_SECRET_KEY (`openssl rand -base64 32`). Settings come from a TOML file and
/// CRONFLOW_* variables: see docs/configuration.md.
#[derive(Debug, Parser)]
#[command(name = "cronflow", version)]
pub struct Cli {
    /// TOML settings file (default: ./cronflow.toml if present; also CRONFLOW_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API, the scheduler and the workers (migrates the database first). On the
    /// first start it prints a new admin API key, once.
    Serve,
    /// Run only the run worker (no API, no scheduler): add these processes to execute
    /// more runs at once. Needs a Postgres database shared with a `serve` process.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the OpenAPI document (YAML) to stdout.
    Openapi,
    /// Manage API keys.
    Keys {
        /// The key operation.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Check the audit trail.
    Audit {
        /// The audit operation.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// Audit trail operations.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit trail's hash chain, in the database (from its first kept entry to
    /// the last written) or in a file exported from `GET /v1/audit` (NDJSON). Prints
    /// "intact" with the count and exits 0, or names the first entry that is edited,
    /// missing or out of place and exits 1. Writes nothing.
    Verify {
        /// An exported NDJSON file to check instead of the database.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

/// API key operations.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token (to stdout, once; only its hash is stored).
    Create {
        /// What the key may do.
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// A label for the key.
        #[arg(long, default_value = "created with the CLI")]
        name: String,
    },
}

/// Scopes as the command line spells them.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// Everything.
    Admin,
    /// GET everything but the audit stream.
    Read,
    /// Read the audit stream only.
    Audit,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Self {
        match s {
            ScopeArg::Admin => Scope::Admin,
            ScopeArg::Read => Scope::Read,
            ScopeArg::Audit => Scope::Audit,
        }
    }
}

/// Parses the command line, loads settings and runs the command; `main` returns this.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        print!("{}", cronflow_api::spec_yaml());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Audit {
        command: AuditCommand::Verify { file: Some(path) },
    }) = &cli.command
    {
        return report_verdict(crate::audit::verify_file(path));
    }
    let settings = match Settings::load(cli.config.as_deref(), &|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(ConfigError { setting, message }) => {
            eprintln!("cronflow: invalid setting {setting}: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(Command::Worker) = cli.command
        && !settings.database_url.expose_secret().starts_with("postgres")
    {
        eprintln!(
            "cronflow: `cronflow worker` needs a Postgres CRONFLOW_DATABASE_URL shared with a \
             `cronflow serve` process; on SQLite, `cronflow serve` runs the workers itself"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    telemetry::init(settings.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cronflow: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Audit {
        command: AuditCommand::Verify { file: None },
    }) = cli.command
    {
        return report_verdict(runtime.block_on(crate::audit::verify_database(&settings)));
    }
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cronflow: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints what `cronflow audit verify` found: exit 0 when intact, 1 when broken or when
/// the trail could not be read.
fn report_verdict(verdict: anyhow::Result<Verdict>) -> ExitCode {
    match verdict {
        Ok(Verdict::Intact {
            count,
            last_seq,
            last_hash,
        }) => {
            println!("intact: {count} entries, the last is {last_seq} with hash {last_hash}");
            ExitCode::SUCCESS
        }
        Ok(Verdict::Broken { seq, reason }) => {
            println!("broken at entry {seq}: {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cronflow: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Audit { .. } => unreachable!("handled by main_entry"),
        Command::Serve => serve(settings).await,
        Command::Worker => {
            let store = connect_and_migrate(
                settings.database_url.expose_secret(),
                settings.secret_key.as_ref(),
            )
            .await?;
            let (store, signals) = cronflow_jobs::signals::Signals::listen_to(store);
            let stop = CancellationToken::new();
            shutdown::cancel_on_signals(stop.clone());
            eprintln!("CronFlow worker started; ctrl-c to stop");
            let watchdog = tokio::spawn(cronflow_jobs::watchdog::run_watchdog_until_stopped(
                store.clone(),
                Arc::new(SystemClock),
                stop.clone(),
            ));
            let result = crate::startup::run_worker(
                store.clone(),
                &signals,
                Arc::new(SystemClock),
                &settings,
                cronflow_jobs::metrics::Metrics::new(),
                stop.clone(),
            )
            .await;
            stop.cancel();
            let _ = watchdog.await;
            store.close().await;
            result
        }
        Command::Migrate => {
            let store = connect_and_migrate(
                settings.database_url.expose_secret(),
                settings.secret_key.as_ref(),
            )
            .await?;
            store.close().await;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Openapi => {
            print!("{}", cronflow_api::spec_yaml());
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Create { scope, name },
        } => {
            let store = connect_and_migrate(
                settings.database_url.expose_secret(),
                settings.secret_key.as_ref(),
            )
            .await?;
            let key = NewApiKey::generate(&name, scope.into(), SystemClock.now());
            store
                .insert_api_key(&key, &ChangedBy::system("cronflow keys create"))
                .await?;
            store.close().await;
            eprintln!(
                "created {} key {}; its token is shown only now:",
                key.key.scope.as_str(),
                key.key.id
            );
            println!("{}", key.token);
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    // Listen for SIGTERM before the banner says CronFlow is up.
    let token = CancellationToken::new();
    shutdown::cancel_on_signals(token.clone());
    let base = format!("http://{}", app.address());
    println!("CronFlow is listening on {base}");
    println!("  API:        {base}/v1   (docs: {base}/docs, spec: {base}/openapi.yaml)");
    if let Some(token) = app.first_admin_token() {
        println!();
        println!("  First start: an admin API key was created. It is shown only now; store it:");
        println!("  {token}");
        println!("  Use it as: curl -H 'Authorization: Bearer {token}' {base}/v1/jobs");
    }
    println!("Press ctrl-c to stop.");
    app.run_until_stopped(token).await
}
