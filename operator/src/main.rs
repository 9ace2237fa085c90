//! `vouchrs-operator`: `run` the controller, print the `crd`, or `render` a gateway's
//! children without a cluster. This file only wires; the work is in the library.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vouchrs_operator::render;
use vouchrs_operator::resolve::{DEFAULT_PROXY_IMAGE, Settings};
use vouchrs_operator::run::{self, Options};

/// Vouchrs operator: reconciles VouchrsGateway resources into proxy fleets.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (with leader election) until SIGTERM.
    Run {
        /// Address of /livez, /readyz and /metrics.
        #[arg(long, env = "VOUCHRS_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
        admin_addr: SocketAddr,
        /// Namespace of the leader Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "vouchrs-system")]
        lease_namespace: String,
        /// Name of the leader Lease.
        #[arg(long, default_value = "vouchrs-operator")]
        lease_name: String,
        /// This replica's identity in the Lease.
        #[arg(long, env = "POD_NAME", default_value = "vouchrs-operator")]
        identity: String,
        /// Proxy image for gateways that name none.
        #[arg(long, env = "VOUCHRS_PROXY_IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
        proxy_image: String,
    },
    /// Print the VouchrsGateway CustomResourceDefinition YAML.
    Crd {
        /// Print the CRDs of the proxy's passkey store instead (VouchrsPasskey and
        /// VouchrsInvitation, `crds/vouchrspasskey.yaml`).
        #[arg(long)]
        passkeys: bool,
    },
    /// Print every child manifest of the gateway(s) in a YAML file.
    Render {
        /// A file with one or more VouchrsGateway documents; `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Proxy image for gateways that name none.
        #[arg(long, env = "VOUCHRS_PROXY_IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
        proxy_image: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd { passkeys } => {
            if passkeys {
                print!("{}", render::passkey_crds_yaml());
            } else {
                print!("{}", render::crd_yaml());
            }
            ExitCode::SUCCESS
        }
        Command::Render { file, proxy_image } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let rendered = text.map_err(|e| e.to_string()).and_then(|t| {
                render::children_yaml(&t, &Settings { proxy_image }, now).map_err(|e| e.to_string())
            });
            match rendered {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("vouchrs-operator: {}: {error}", file.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Run {
            admin_addr,
            lease_namespace,
            lease_name,
            identity,
            proxy_image,
        } => {
            init_logs();
            let options = Options {
                admin_addr,
                lease_namespace,
                lease_name,
                identity,
                settings: Settings { proxy_image },
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("vouchrs-operator: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "vouchrs-operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// JSON logs, filtered by `RUST_LOG` (default `info`).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .init();
}
