//! `sonde`: count calls, time and trace user-space functions with one eBPF
//! program per job, each function told apart by its BPF cookie.

mod args;
mod count;
mod error;
mod filter;
#[cfg(test)]
mod fuzz;
mod hist;
mod human;
mod latency;
mod list;
mod new;
mod probes;
mod record;
mod report;
mod scope;
mod serve;
mod session;
mod stacks;
mod system;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use args::Common;
use error::CliError;

/// Trace user-space functions with uprobes and BPF cookies.
///
/// One eBPF program per job is attached to every function matched; the
/// function is told apart by its cookie (its index in the list). sonde picks
/// the best mechanism the kernel has (uprobe_multi on 6.6+, perf links with
/// cookies on 5.15+, a program copy per function on 5.10) and says which ran.
#[derive(Parser, Debug)]
#[command(name = "sonde", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Count calls per function.
    ///
    /// A live table on a terminal, refreshed every second; the summary at the
    /// end (Ctrl-C, --duration, or the end of COMMAND). Functions never called
    /// are listed with 0.
    #[command(after_help = "EXAMPLES:
  sonde count libc 'str*' -- ls -l             every str* function of libc, for one ls
  sonde count -p 4242 -d 10 libc malloc free   two functions of process 4242, for 10 s
  sonde count ./server '*Handler::handle*'     Rust or C++ methods by demangled name
  sonde count ./app:'handle*' libc:malloc libssl:'SSL_*' -- ./app
                                               several binaries: BINARY:PATTERN each
  sonde count --json ./app 'app::*' -- ./app   one JSON object at the end:
      {\"tier\": \"multi\", \"skipped_hits\": 0, \"functions\": [{\"name\", \"demangled\", \"cookie\", \"count\"}]}")]
    Count(Common),
    /// Time each call: count, min, mean, max (exact) and quantiles per function.
    ///
    /// One session program at entry and return (native on Linux 6.13+,
    /// emulated before); the interval is measured per call, so recursion and
    /// concurrent threads are timed right. Quantiles come from log-linear
    /// buckets (eight per power of two): within 6.25 % of the true value.
    /// `--by pid|tid|comm` gives the same figures per key.
    #[command(after_help = "EXAMPLES:
  sonde latency libc 'malloc' 'free' -- ./bench
  sonde latency -p 4242 -d 30 ./server 'handle_*'
  sonde latency --json ./app 'app::parse' -- ./app input.txt
      {\"tier\", \"skipped_hits\", \"functions\": [{\"name\", \"cookie\", \"count\", \"timed\", \"untimed\", \"min_ns\",
        \"mean_ns\", \"p50_ns\", \"p90_ns\", \"p99_ns\", \"max_ns\", \"histogram\": [{\"ge_ns\", \"le_ns\", \"count\"}]}]}")]
    Latency(Common),
    /// Print one line per call: time, pid, tid, command, function, arguments.
    ///
    /// Calls go through a 4 MiB ring buffer; calls it had no room for are
    /// counted and reported at the end.
    #[command(after_help = "EXAMPLES:
  sonde trace libc 'open*' --args 2 -- cat /etc/hostname
  sonde trace --args s,i --ret i libc open -- cat /etc/hostname    path as a string, fd returned
  sonde trace --ret s /bin/bash readline       bashreadline: each line typed, as bash returns it
  sonde trace --args p,b:ret,i --ret i libssl SSL_read -p 4242   what each SSL_read returned, read at return
  sonde trace --args i,b:arg2,u libc write -p 4242               the bytes each write was given
  sonde trace -p 4242 ./server 'handle_*'
  sonde trace --json ./app 'fx_*' -- ./app     one object per line:
      {\"ts_ns\", \"pid\", \"tid\", \"comm\", \"function\", \"cookie\", \"args\": [...]}")]
    Trace {
        #[command(flatten)]
        common: Common,
        /// Arguments to print: a count (`2`: two, in hex) or types, one per
        /// argument: i (int), u (unsigned), l (long), x (hex), p (pointer),
        /// s (C string read from the process at entry, up to --max-bytes),
        /// s@ret (a C string read when the function returns: output buffers),
        /// b:LEN (a buffer of LEN bytes, escaped: LEN a number up to 4096,
        /// argN, or ret — read at return, as many bytes as the call returned,
        /// none when negative), gs (a Go string: pointer and length, two
        /// registers). Up to four strings or buffers per call, `--ret s`
        /// included. A Go program's arguments are read from Go's registers
        /// (rax, rbx, rcx, rdi, rsi, r8).
        /// `PATTERN=TYPES` sets them for the functions PATTERN names
        /// (`--args readline=s`); repeat for several.
        #[arg(long, value_name = "TYPES")]
        args: Vec<String>,
        /// Also print each call's return value (TYPE as for --args, default x)
        /// and duration, matched to its entry per thread.
        #[arg(long, value_name = "TYPE", num_args = 0..=1, default_missing_value = "x", value_parser = trace::parse_ret)]
        ret: Option<trace::ArgType>,
        /// Also print each call's user stack (captured in the program as
        /// build id and offset per frame, named with blazesym: demangled,
        /// file:line where debug information exists).
        #[arg(long)]
        stack: bool,
        /// Bytes read of each string or buffer (1 to 4096; default 256, or
        /// the largest `b:LEN`): longer ones are cut and marked.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
        max_bytes: Option<u32>,
    },
    /// The distribution of an argument or the return value, per function.
    ///
    /// Counted in the program, log2 buckets (`[2^(b-1), 2^b)`, and 0 alone) or
    /// linear ones (`--linear STEP`, the last taking everything above).
    #[command(after_help = "EXAMPLES:
  sonde hist --of arg0 libc malloc -- ./app       sizes asked of malloc
  sonde hist --of ret libc read -p 4242 -d 10     bytes read per call
  sonde hist --of arg2 --linear 100 ./app 'send_*' -- ./app
  sonde hist --json --of arg0 libc malloc -- ls   {\"tier\", \"functions\": [{\"name\", \"count\",
      \"histogram\": [{\"ge\", \"lt\", \"count\"}]}]}")]
    Hist {
        #[command(flatten)]
        common: Common,
        /// What to measure: arg0..arg5, or ret (the return value).
        #[arg(long, value_name = "WHAT", value_parser = hist::parse_of)]
        of: hist::Of,
        /// Linear buckets of this width instead of log2.
        #[arg(long, value_name = "STEP")]
        linear: Option<u64>,
    },
    /// Serve the probes of a configuration file as Prometheus metrics.
    ///
    /// Calls per function (`sonde_calls_total`), latency histograms
    /// (`sonde_call_duration_seconds`, `latency = true`), the tier of each
    /// probe and the agent's health, at http://LISTEN/metrics. SIGHUP or an
    /// edit of CONFIG attaches and detaches only the difference; missing
    /// binaries are retried, replaced ones re-attached.
    #[command(after_help = "EXAMPLES:
  sonde serve /etc/sonde/serve.toml
  sonde serve --check serve.toml          validate, show what each probe resolves to
  sonde serve --listen 0.0.0.0:9464 serve.toml

CONFIG:
  listen = \"127.0.0.1:9464\"
  [[probe]]
  binary = \"libssl.so.3\"                 a path or a bare library name
  functions = [\"SSL_read\", \"SSL_write\"]  globs, demangled names, usdt:PROVIDER:NAME
  latency = true                          adds the duration histogram
  # pid = 1234                            only this process")]
    Serve(serve::ServeArgs),
    /// Show what the kernel supports and the attach tiers sonde would use.
    #[command(after_help = "EXAMPLES:
  sonde features
  sonde features --json")]
    Features {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Write a new probe project: host crate, eBPF crate, build script.
    ///
    /// The example counts calls per function with one program and cookies:
    /// `cargo build --release`, then `sudo target/release/NAME BINARY PATTERN...
    /// [-- COMMAND]` prints `name count` per function. DIR must be new or empty.
    #[command(after_help = "EXAMPLES:
  sonde new my-probe
  sonde new tools/alloc-counter --name alloc_counter")]
    New {
        /// Directory to create (new or empty).
        dir: std::path::PathBuf,
        /// Package name (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Print a shell completion script (bash, zsh or fish).
    #[command(after_help = "EXAMPLES:
  sonde completions bash > /etc/bash_completion.d/sonde
  sonde completions zsh > /usr/share/zsh/vendor-completions/_sonde
  sonde completions fish > ~/.config/fish/completions/sonde.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (sonde(1) and one per command) into DIR.
    #[command(hide = true)]
    Man {
        /// Where sonde.1, sonde-count.1, ... go.
        dir: std::path::PathBuf,
    },
    /// List the functions patterns resolve to, with offsets, attaching nothing.
    #[command(after_help = "EXAMPLES:
  sonde list libc 'str*'
  sonde list -p 4242 libssl.so.3 'SSL_*'
  sonde list ./app            every function of ./app")]
    List {
        /// Binary or library (path or bare library name).
        target: String,
        /// Globs or names (default: every function).
        patterns: Vec<String>,
        /// Look the library up in this process.
        #[arg(short, long, value_parser = args::parse_pid, allow_negative_numbers = true)]
        pid: Option<u32>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// `--ret` takes an optional TYPE: followed by something that is not one
/// (`--ret ./app`), it is `--ret=x` and the word stays an operand.
fn optional_values(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        if a == "--" {
            out.push(a);
            out.extend(args);
            break;
        }
        let is_type = |next: &std::ffi::OsString| next.to_str().is_some_and(|t| trace::parse_ret(t).is_ok());
        if a == "--ret" && args.peek().is_some_and(|next| !is_type(next)) {
            out.push("--ret=x".into());
        } else {
            out.push(a);
        }
    }
    out
}

/// The command line as clap reads it, after [`optional_values`].
fn parse_command_line(args: impl Iterator<Item = std::ffi::OsString>) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(optional_values(args))
}

/// `sonde man DIR`: sonde.1 and sonde-COMMAND.1 for each visible command.
fn man_pages(dir: &std::path::Path) -> Result<i32, CliError> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)
        .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
        .map_err(|e| CliError::new(format!("{}: {e}", dir.display())))?;
    Ok(0)
}

fn main() -> ExitCode {
    let cli = parse_command_line(std::env::args_os()).unwrap_or_else(|e| e.exit());
    sonde::sys::raise_fd_limit();
    let result = match &cli.command {
        Command::Count(c) => count::run(c),
        Command::Latency(c) => latency::run(c),
        Command::Trace {
            common,
            args,
            ret,
            stack,
            max_bytes,
        } => trace::ArgSpecs::parse(args).and_then(|specs| trace::run(common, &specs, *ret, *stack, *max_bytes)),
        Command::Hist { common, of, linear } => hist::run(common, *of, *linear),
        Command::Serve(args) => serve::run(args),
        Command::Features { json } => list::features(*json),
        Command::New { dir, name } => new::new(dir, name.as_deref()),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut Cli::command(), "sonde", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man { dir } => man_pages(dir),
        Command::List {
            target,
            patterns,
            pid,
            json,
        } => list::list(target, patterns, *pid, *json),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(CliError(msg)) => {
            // Errors may quote names from binaries: their lines stay ours.
            let lines: Vec<String> = msg.split('\n').map(human::text).collect();
            eprintln!("sonde: error: {}", lines.join("\n"));
            ExitCode::from(2)
        }
    }
}
