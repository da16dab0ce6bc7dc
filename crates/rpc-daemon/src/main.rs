//! `rpc-daemon`: runs the issue-tracker daemon (`serve`) or acts as its client (every other
//! subcommand), through the daemon when one is running and directly on the database file
//! otherwise (or always, with `--no-daemon`).
//!
//! Replies are printed as pretty JSON on stdout. Errors go to stderr as
//! `error: <code>: <message>` with exit status 1; usage errors exit with 2.

fn main() -> std::process::ExitCode {
    app::main()
}

mod app {
    use std::io::Read;
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::Duration;

    use clap::{Args, Parser, Subcommand, ValueEnum};
    use rpc_daemon::client::{Client, ClientConfig, ClientError, Mode};
    use rpc_daemon::model::{CreateArgs, Dep, DepKind, ListArgs, Op, Reply, Status, UpdateArgs};
    use rpc_daemon::server::{Server, ServerConfig, ServerError};
    use rpc_daemon::store::Durability;

    #[derive(Parser, Debug)]
    #[command(
        name = "rpc-daemon",
        version,
        about = "SQLite issue tracker shared by many agents: the daemon and its client",
        after_help = "Client subcommands use the daemon listening on <db>.sock when there is one \
                  and open the database file directly when there is none (--no-daemon: always).\n\
                  Replies are printed as JSON on stdout; errors as `error: <code>: <message>` on \
                  stderr with exit status 1 (2 for usage errors)."
    )]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand, Debug)]
    enum Command {
        /// Run the daemon in the foreground until SIGINT or SIGTERM.
        Serve(ServeArgs),
        /// Create an issue.
        Create {
            #[command(flatten)]
            conn: ConnArgs,
            /// One line, at most 500 bytes.
            #[arg(long)]
            title: String,
            /// Free text, at most 64 KiB.
            #[arg(long)]
            description: Option<String>,
            /// 0 (most urgent) to 4; default 2.
            #[arg(long)]
            priority: Option<u8>,
            /// Who works on it.
            #[arg(long)]
            assignee: Option<String>,
            /// A label (repeat for more).
            #[arg(long = "label", value_name = "LABEL")]
            labels: Vec<String>,
        },
        /// Change fields of an issue; fields not given stay as they are.
        Update {
            #[command(flatten)]
            conn: ConnArgs,
            /// The issue, like hl-42.
            id: String,
            /// New title.
            #[arg(long)]
            title: Option<String>,
            /// New description.
            #[arg(long)]
            description: Option<String>,
            /// New status (closing sets closed_at; reopening clears it).
            #[arg(long)]
            status: Option<StatusArg>,
            /// New priority, 0 to 4.
            #[arg(long)]
            priority: Option<u8>,
            /// New assignee.
            #[arg(long, conflicts_with = "unassign")]
            assignee: Option<String>,
            /// Clear the assignee.
            #[arg(long)]
            unassign: bool,
            /// Replace the labels with these (repeat for more).
            #[arg(long = "label", value_name = "LABEL", conflicts_with = "clear_labels")]
            labels: Vec<String>,
            /// Remove every label.
            #[arg(long)]
            clear_labels: bool,
        },
        /// Close an issue (closing a closed issue changes nothing).
        Close {
            #[command(flatten)]
            conn: ConnArgs,
            /// The issue.
            id: String,
            /// Why.
            #[arg(long)]
            reason: Option<String>,
        },
        /// Show an issue with its dependencies.
        Show {
            #[command(flatten)]
            conn: ConnArgs,
            /// The issue.
            id: String,
        },
        /// List issues, newest first.
        List {
            #[command(flatten)]
            conn: ConnArgs,
            /// Only this status.
            #[arg(long)]
            status: Option<StatusArg>,
            /// Only this assignee.
            #[arg(long)]
            assignee: Option<String>,
            /// Only issues with this label.
            #[arg(long)]
            label: Option<String>,
            /// Only this priority.
            #[arg(long)]
            priority: Option<u8>,
            /// At most this many (default 100, at most 10000).
            #[arg(long)]
            limit: Option<u32>,
        },
        /// Open issues with no open blocker, by priority then age.
        Ready {
            #[command(flatten)]
            conn: ConnArgs,
            /// At most this many (default 100, at most 10000).
            #[arg(long)]
            limit: Option<u32>,
        },
        /// Add or remove a dependency.
        #[command(subcommand)]
        Dep(DepCommand),
        /// Apply a JSON array of operations in one transaction: all or none.
        Batch {
            #[command(flatten)]
            conn: ConnArgs,
            /// File holding the array of operations (as in PROTOCOL.md); `-` reads stdin.
            #[arg(long)]
            file: PathBuf,
        },
        /// Counts of issues, dependencies and events.
        Stats {
            #[command(flatten)]
            conn: ConnArgs,
        },
        /// Check that the daemon (or the database) answers.
        Ping {
            #[command(flatten)]
            conn: ConnArgs,
        },
    }

    #[derive(Subcommand, Debug)]
    enum DepCommand {
        /// ISSUE depends on DEPENDS_ON.
        Add(DepArgs),
        /// Remove the dependency of ISSUE on DEPENDS_ON.
        Remove(DepArgs),
    }

    #[derive(Args, Debug)]
    struct DepArgs {
        #[command(flatten)]
        conn: ConnArgs,
        /// The dependent issue.
        issue: String,
        /// The issue it depends on.
        depends_on: String,
        /// How they relate (`blocks`: DEPENDS_ON must be closed before ISSUE is ready).
        #[arg(long, value_enum, default_value_t = KindArg::Blocks)]
        kind: KindArg,
    }

    /// How a client subcommand reaches the database.
    #[derive(Args, Debug)]
    struct ConnArgs {
        /// The database file.
        #[arg(long)]
        db: PathBuf,
        /// The daemon's socket [default: <db>.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Open the database file directly, even when a daemon is running.
        #[arg(long)]
        no_daemon: bool,
        /// Give up on a call after this long (like 500ms, 30s, 5m).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
    }

    #[derive(Args, Debug)]
    struct ServeArgs {
        /// The database file (created on first use).
        #[arg(long)]
        db: PathBuf,
        /// Where to listen [default: <db>.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Fsync every commit (synchronous=FULL) instead of surviving only a process crash.
        #[arg(long)]
        durable: bool,
        /// Most connections served at once; more are refused with `overloaded` [default: 256].
        #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        max_connections: Option<usize>,
        /// Close a connection idle this long (like 90s, 5m) [default: 5m].
        #[arg(long, value_parser = parse_positive_duration)]
        idle_timeout: Option<Duration>,
    }

    #[derive(ValueEnum, Clone, Copy, Debug)]
    enum StatusArg {
        Open,
        #[value(name = "in_progress", alias = "in-progress")]
        InProgress,
        Closed,
    }

    impl From<StatusArg> for Status {
        fn from(s: StatusArg) -> Status {
            match s {
                StatusArg::Open => Status::Open,
                StatusArg::InProgress => Status::InProgress,
                StatusArg::Closed => Status::Closed,
            }
        }
    }

    #[derive(ValueEnum, Clone, Copy, Debug)]
    enum KindArg {
        Blocks,
        Related,
        ParentChild,
    }

    impl From<KindArg> for DepKind {
        fn from(k: KindArg) -> DepKind {
            match k {
                KindArg::Blocks => DepKind::Blocks,
                KindArg::Related => DepKind::Related,
                KindArg::ParentChild => DepKind::ParentChild,
            }
        }
    }

    /// Parses `500ms`, `30s`, `5m`, `1h` (a bare number is seconds).
    fn parse_duration(s: &str) -> Result<Duration, String> {
        let bad = || {
            format!(
            "invalid duration {s:?}: expected a number with an optional unit, like 500ms, 30s, 5m or 1h"
        )
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let ms_per = match unit {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        n.checked_mul(ms_per)
            .map(Duration::from_millis)
            .ok_or_else(bad)
    }

    /// [`parse_duration`], refusing zero.
    fn parse_positive_duration(s: &str) -> Result<Duration, String> {
        match parse_duration(s)? {
            d if d.is_zero() => Err(format!("invalid duration {s:?}: expected more than zero")),
            d => Ok(d),
        }
    }

    /// A failure to report as `error: <code>: <message>`.
    struct Failure {
        code: String,
        message: String,
    }

    impl From<ClientError> for Failure {
        fn from(e: ClientError) -> Self {
            Failure {
                code: e.code().to_string(),
                message: e.message(),
            }
        }
    }

    pub(crate) fn main() -> ExitCode {
        let cli = Cli::parse();
        let serving = matches!(cli.command, Command::Serve(_));
        init_logging(serving);
        let runtime = if serving {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        };
        let runtime = match runtime {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: internal: cannot start the async runtime: {e}");
                return ExitCode::from(1);
            }
        };
        let result = runtime.block_on(async move {
            match cli.command {
                Command::Serve(args) => serve(args).await,
                other => run_client(other).await,
            }
        });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => {
                eprintln!("error: {}: {}", f.code, f.message);
                ExitCode::from(1)
            }
        }
    }

    /// Logs to stderr; `RUST_LOG` overrides the default level (info for the daemon; warnings,
    /// and the client's one-line notice when it falls back to direct mode, for the client).
    fn init_logging(serving: bool) {
        let default = if serving {
            "info"
        } else {
            "warn,rpc_daemon=info"
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        if serving {
            builder.init();
        } else {
            builder.without_time().with_target(false).init();
        }
    }

    /// The operation a client subcommand asks for, and how to reach the database.
    fn to_op(command: Command) -> Result<(ConnArgs, Op), Failure> {
        Ok(match command {
            Command::Serve(_) => {
                return Err(Failure {
                    code: "internal".into(),
                    message: "serve is not a client command".into(),
                })
            }
            Command::Create {
                conn,
                title,
                description,
                priority,
                assignee,
                labels,
            } => (
                conn,
                Op::Create(CreateArgs {
                    title,
                    description: description.unwrap_or_default(),
                    priority,
                    assignee,
                    labels,
                }),
            ),
            Command::Update {
                conn,
                id,
                title,
                description,
                status,
                priority,
                assignee,
                unassign,
                labels,
                clear_labels,
            } => (
                conn,
                Op::Update(UpdateArgs {
                    id,
                    title,
                    description,
                    status: status.map(Status::from),
                    priority,
                    assignee: if unassign {
                        Some(None)
                    } else {
                        assignee.map(Some)
                    },
                    labels: if clear_labels {
                        Some(Vec::new())
                    } else if labels.is_empty() {
                        None
                    } else {
                        Some(labels)
                    },
                }),
            ),
            Command::Close { conn, id, reason } => (conn, Op::Close { id, reason }),
            Command::Show { conn, id } => (conn, Op::Show { id }),
            Command::List {
                conn,
                status,
                assignee,
                label,
                priority,
                limit,
            } => (
                conn,
                Op::List(ListArgs {
                    status: status.map(Status::from),
                    assignee,
                    label,
                    priority,
                    limit,
                }),
            ),
            Command::Ready { conn, limit } => (conn, Op::Ready { limit }),
            Command::Dep(DepCommand::Add(d)) => {
                let dep = Dep {
                    issue: d.issue,
                    depends_on: d.depends_on,
                    kind: d.kind.into(),
                };
                (d.conn, Op::DepAdd(dep))
            }
            Command::Dep(DepCommand::Remove(d)) => {
                let dep = Dep {
                    issue: d.issue,
                    depends_on: d.depends_on,
                    kind: d.kind.into(),
                };
                (d.conn, Op::DepRemove(dep))
            }
            Command::Batch { conn, file } => {
                let ops = read_ops(&file)?;
                (conn, Op::Batch { ops })
            }
            Command::Stats { conn } => (conn, Op::Stats {}),
            Command::Ping { conn } => (conn, Op::Ping {}),
        })
    }

    /// Reads the JSON array of operations of `batch --file` (`-`: stdin).
    fn read_ops(file: &std::path::Path) -> Result<Vec<Op>, Failure> {
        let name = file.display().to_string();
        let mut text = String::new();
        let read = if name == "-" {
            std::io::stdin().read_to_string(&mut text).map(|_| ())
        } else {
            std::fs::read_to_string(file).map(|t| text = t)
        };
        read.map_err(|e| Failure {
            code: "bad_request".into(),
            message: format!("cannot read the batch file {name:?}: {e}"),
        })?;
        serde_json::from_str::<Vec<Op>>(&text).map_err(|e| Failure {
            code: "bad_request".into(),
            message: format!(
                "batch file {name:?}: {e}: expected a JSON array of operations like \
             [{{\"op\": \"create\", \"title\": \"x\"}}]"
            ),
        })
    }

    async fn run_client(command: Command) -> Result<(), Failure> {
        let (conn, op) = to_op(command)?;
        let mut cfg = ClientConfig::new(conn.db);
        cfg.socket = conn.socket;
        cfg.timeout = conn.timeout;
        cfg.mode = if conn.no_daemon {
            Mode::Direct
        } else {
            Mode::Auto
        };
        let mut client = Client::connect(cfg).await?;
        let reply = client.call(op).await?;
        print_reply(&reply)
    }

    fn print_reply(reply: &Reply) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(reply).map_err(|e| Failure {
            code: "internal".into(),
            message: format!("encoding the reply: {e}"),
        })?;
        println!("{text}");
        Ok(())
    }

    /// Runs the daemon until SIGINT or SIGTERM, then shuts it down gracefully (a second signal
    /// during the drain exits at once).
    async fn serve(args: ServeArgs) -> Result<(), Failure> {
        let mut cfg = ServerConfig::new(args.db);
        if let Some(socket) = args.socket {
            cfg.socket = socket;
        }
        if args.durable {
            cfg.store.durability = Durability::Full;
        }
        if let Some(n) = args.max_connections {
            cfg.max_connections = n;
        }
        if let Some(t) = args.idle_timeout {
            cfg.idle_timeout = t;
        }
        let server = Server::bind(cfg).await.map_err(Failure::from)?;
        let handle = server.shutdown_handle();
        handle.on_signals().map_err(|e| Failure {
            code: "io".into(),
            message: format!("installing the SIGINT/SIGTERM handlers: {e}"),
        })?;
        exit_on_second_signal().map_err(|e| Failure {
            code: "io".into(),
            message: format!("installing the SIGINT/SIGTERM handlers: {e}"),
        })?;
        tracing::info!(
            db = %server.db_path().display(),
            socket = %server.socket_path().display(),
            "serving; SIGINT or SIGTERM stops"
        );
        server.run().await.map_err(Failure::from)?;
        Ok(())
    }

    /// The first SIGINT/SIGTERM starts the graceful shutdown ([`ShutdownHandle::on_signals`]);
    /// a second one ends the process without waiting for the drain.
    ///
    /// [`ShutdownHandle::on_signals`]: rpc_daemon::server::ShutdownHandle::on_signals
    fn exit_on_second_signal() -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            for seen in 1..=2 {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if seen == 2 {
                    tracing::warn!("second signal: exiting without finishing the drain");
                    std::process::exit(130);
                }
            }
        });
        Ok(())
    }

    impl From<ServerError> for Failure {
        fn from(e: ServerError) -> Self {
            let code = match &e {
                ServerError::AlreadyRunning { .. } => "already_running",
                ServerError::Locked { .. } => "locked",
                ServerError::Bind { .. } => "bind",
                ServerError::Store(api) => api.code.as_str(),
                ServerError::Io { .. } => "io",
                ServerError::InvalidConfig { .. } => "invalid_config",
            };
            let message = match e {
                ServerError::Store(api) => format!("database: {}", api.message),
                other => other.to_string(),
            };
            Failure {
                code: code.into(),
                message,
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use clap::CommandFactory;

        #[test]
        fn the_command_line_is_consistent() {
            Cli::command().debug_assert();
        }

        #[test]
        fn durations_parse_with_units() {
            assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
            assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
            assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
            assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
            assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
            for bad in ["", "s", "1x", "-1s", "1.5s", "99999999999999999999h"] {
                let e = parse_duration(bad).unwrap_err();
                assert!(e.contains("expected a number"), "{bad}: {e}");
            }
        }
    }
}
