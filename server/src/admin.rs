//! `gridlake user ...` and `gridlake token ...`: the first admin and the first tokens,
//! written straight into the side store (the server may be running; SQLite and
//! PostgreSQL both take a second writer).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use crm::{Crm, NewApiToken, NewUser, Page, Role, TokenScope, UserFilter};

use crate::Config;
use crate::cli::ConfigArgs;
use crate::error::{Error, Result};
use crate::serve::runtime;
use crate::sql::write_stdout;

/// `gridlake user`.
#[derive(Debug, Args)]
pub(crate) struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    #[command(flatten)]
    config: StoreArgs,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user. The password is read from the terminal without echo, or as the
    /// first line of stdin when it is not a terminal (`echo "$PW" | gridlake user create ...`).
    Create {
        /// The email the user logs in with.
        #[arg(long)]
        email: String,
        /// customer, prosumer, business, admin, support, analyst or gateway.
        #[arg(long)]
        role: Role,
        /// Name shown in the portal [default: the email].
        #[arg(long)]
        name: Option<String>,
        /// Create the user without a password (it cannot log in; for gateway identities).
        #[arg(long)]
        no_password: bool,
    },
    /// List users as JSON lines.
    List,
}

/// `gridlake token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    config: StoreArgs,
}

/// Where the side store is: the config file and data directory, given before or after
/// the subcommand (`gridlake token create --data-dir D ...`).
#[derive(Debug, Args)]
struct StoreArgs {
    /// TOML configuration file (for `data_dir` and `[crm]`).
    #[arg(long, global = true, env = "GRIDLAKE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory holding crm.sqlite [default: ./data].
    #[arg(long, global = true, env = "GRIDLAKE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn load(&self) -> Result<Config> {
        ConfigArgs {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            http_addr: None,
        }
        .load()
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token and print it (once: only its digest is stored).
    Create {
        /// What the token is for, e.g. "gateway home-1".
        #[arg(long)]
        name: String,
        /// write (a gateway: readings for one site), read (analysts) or admin.
        #[arg(long)]
        scope: TokenScope,
        /// The site a write token writes for (required for write tokens).
        #[arg(long)]
        site_id: Option<i64>,
        /// Expiry, e.g. 90d or 1y [default: never].
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// Revoke an API token by id.
    Revoke {
        /// The token's id.
        id: i64,
    },
}

/// Runs `gridlake user ...`.
pub(crate) fn run_user(args: UserArgs) -> Result<()> {
    let config = args.config.load()?;
    let password = match &args.command {
        UserCommand::Create {
            no_password: false, ..
        } => Some(read_password()?),
        _ => None,
    };
    runtime()?.block_on(async {
        let crm = open(&config).await?;
        let out = match args.command {
            UserCommand::Create {
                email,
                role,
                name,
                no_password: _,
            } => {
                let user = crm
                    .users()
                    .create(NewUser {
                        display_name: name.unwrap_or_else(|| email.clone()),
                        email,
                        role,
                        password,
                    })
                    .await?;
                json_line(&user)
            }
            UserCommand::List => {
                let mut out = String::new();
                let mut page = Page::first(Page::MAX_LIMIT);
                loop {
                    let users = crm.users().list(&UserFilter::default(), page).await?;
                    for user in &users {
                        out.push_str(&json_line(user));
                    }
                    if users.len() < Page::MAX_LIMIT as usize {
                        break;
                    }
                    page.offset += u64::from(Page::MAX_LIMIT);
                }
                out
            }
        };
        crm.close().await;
        write_stdout(out.as_bytes())
    })
}

/// Runs `gridlake token ...`.
pub(crate) fn run_token(args: TokenArgs) -> Result<()> {
    let config = args.config.load()?;
    runtime()?.block_on(async {
        let crm = open(&config).await?;
        let out = match args.command {
            TokenCommand::Create {
                name,
                scope,
                site_id,
                expires_in,
            } => {
                let expires_ms = expires_in.map(|d| now_ms().saturating_add(ms(d)));
                let (token, plain) = crm
                    .api_tokens()
                    .create(NewApiToken {
                        name,
                        scope,
                        site_id,
                        expires_ms,
                    })
                    .await?;
                let record = serde_json::json!({ "token": plain, "api_token": token });
                format!("{record}\n")
            }
            TokenCommand::Revoke { id } => {
                crm.api_tokens().revoke(id).await?;
                format!("{}\n", serde_json::json!({ "revoked": id }))
            }
        };
        crm.close().await;
        write_stdout(out.as_bytes())
    })
}

async fn open(config: &Config) -> Result<Crm> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    Ok(Crm::open(&config.crm, &config.data_dir).await?)
}

fn read_password() -> Result<String> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("password: ").map_err(Error::Stdin)?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(Error::Stdin)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    Ok(password)
}

fn json_line(value: &impl serde::Serialize) -> String {
    // Serializing our own plain structs cannot fail.
    format!("{}\n", serde_json::to_string(value).unwrap_or_default())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms)
}
