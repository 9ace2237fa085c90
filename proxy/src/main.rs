//! `vouchrs-proxy`: load config (exit non-zero before binding on any error), build, serve,
//! wait for a signal, drain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vouchrs_proxy::app::{self, App};
use vouchrs_proxy::session::keyring::{KeyId, generate_line};

/// Vouchrs: a stateless, cookie-authenticated reverse proxy.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The TOML config file (see config/proxy.example.toml).
    #[arg(
        long,
        short,
        env = "VOUCHRS_CONFIG",
        default_value = "/etc/vouchrs/proxy.toml",
        global = true
    )]
    config: PathBuf,
    /// Validate the config (and the files it names), print the outcome, and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new random key ring line (`ID KEY`). Put it first in the key ring file to
    /// rotate: it seals from then on, older keys still open.
    Keygen {
        /// The key id; defaults to `k` and the current Unix time.
        #[arg(long)]
        id: Option<String>,
    },
    /// Print a `Cookie` header value with a session sealed by the configured key ring, for
    /// demos and smoke tests. Anyone who can read the key ring can do this; keep it secret.
    MintSession {
        /// The user id sent upstream.
        #[arg(long)]
        user: String,
        #[arg(long)]
        email: Option<String>,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Print a one-time invitation link that lets its holder register one passkey for
    /// ADDRESS (passkeys must be enabled). Anyone with the link can use it until it expires.
    Invite {
        /// The email address the passkey will sign in as.
        #[arg(long)]
        email: String,
        /// How long the link stays valid, e.g. `24h` (at most passkeys.invitation_max_ttl).
        #[arg(long, default_value = "24h")]
        ttl: humantime::Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut invite = None;
    let mint = match cli.command {
        Some(Command::Keygen { id }) => return keygen(id),
        Some(Command::Invite { email, ttl }) => {
            invite = Some((email, ttl));
            None
        }
        Some(Command::MintSession {
            user,
            email,
            groups,
        }) => Some((user, email, groups)),
        None => None,
    };

    let built = app::load_config(&cli.config).and_then(|config| {
        let runtime = config.runtime.clone();
        App::build(config).map(|app| (app, runtime))
    });
    let (app, runtime) = match built {
        Ok(built) => built,
        Err(error) => {
            eprintln!("vouchrs-proxy: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some((user, email, groups)) = mint {
        let sealer = app.sealer();
        let session = sealer.start(
            user,
            email,
            groups,
            "minted".into(),
            vouchrs_proxy::gateway::unix_now(),
        );
        println!("{}={}", sealer.cookie_name(), sealer.seal(&session));
        return ExitCode::SUCCESS;
    }
    if let Some((email, ttl)) = invite {
        return print_invitation(&app, &email, ttl.into());
    }
    if cli.check_config {
        println!("{}: config OK", cli.config.display());
        return ExitCode::SUCCESS;
    }

    let _log = vouchrs_proxy::telemetry::init(&runtime);
    let result = app.run();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "vouchrs-proxy failed");
            eprintln!("vouchrs-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(id: Option<String>) -> ExitCode {
    let id = id.unwrap_or_else(|| format!("k{}", vouchrs_proxy::gateway::unix_now()));
    match KeyId::parse(&id)
        .map_err(|e| e.to_string())
        .and_then(|id| generate_line(&id).map_err(|e| e.to_string()))
    {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("vouchrs-proxy keygen: {error}");
            ExitCode::from(2)
        }
    }
}

fn print_invitation(app: &App, email: &str, ttl: std::time::Duration) -> ExitCode {
    let Some(passkeys) = app.passkeys() else {
        eprintln!("vouchrs-proxy invite: passkeys are not enabled in the config");
        return ExitCode::from(2);
    };
    if let Err(error) = vouchrs_proxy::config::EmailAddress::parse(email) {
        eprintln!("vouchrs-proxy invite: --email: {error}");
        return ExitCode::from(2);
    }
    let ttl = ttl.as_secs();
    if ttl == 0 || ttl > passkeys.max_invitation_ttl() {
        eprintln!(
            "vouchrs-proxy invite: --ttl must be between 1s and passkeys.invitation_max_ttl ({}s)",
            passkeys.max_invitation_ttl()
        );
        return ExitCode::from(2);
    }
    let now = vouchrs_proxy::gateway::unix_now();
    let (invitation, token) =
        vouchrs_proxy::passkey::invite::Invitation::create(app.sealer(), email, ttl, now);
    println!("{}?token={token}", app.invitation_base());
    eprintln!(
        "invitation {} for {} valid until {} (Unix time)",
        invitation.id, invitation.email, invitation.expires_at
    );
    ExitCode::SUCCESS
}
