//! Writing to stdout and stderr without panicking when the other end is gone (see the
//! macros in main.rs), and whether a stream is a terminal (colour only then).

use std::fmt::Arguments;
use std::io::{ErrorKind, Write};

fn write_stdout(args: Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let result = out.write_fmt(args).and_then(|_| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => {}
        // The reader went away: nothing more we print can be read.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            stderr_line(format_args!("error: cannot write to stdout: {e}"));
            std::process::exit(1);
        }
    }
}

pub fn stdout_line(args: Arguments<'_>) {
    write_stdout(args, true)
}

pub fn stdout_text(args: Arguments<'_>) {
    write_stdout(args, false)
}

pub fn stderr_line(args: Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|_| err.write_all(b"\n"));
}

/// Writes one line to stdout and flushes it, ignoring every error: for a long-running
/// process (the broker, the cluster launcher) whose stdout reader may have gone away.
pub fn stdout_line_lossy(args: Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_fmt(args)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush());
}

/// Whether stderr is a terminal (log colours only then, never in a file or a pipe).
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}
