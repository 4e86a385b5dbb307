//! What commands print on stdout, and how they end.
//!
//! Output is composed as text, blanked of secrets (`log::redacted`) and written at once: a
//! reader that closed the pipe early (`segflow plan | head`) ends the command quietly, as
//! ripgrep does, instead of a panic in `println!`. Errors go to stderr as one line with their sources (`error::chain`) and leave
//! with their class's exit code.

use std::io::Write;
use std::process::ExitCode;

use segflow_core::ErrorClass;

/// Writes `text` to stdout. A closed pipe is not an error: whoever reads has what it wanted.
pub fn emit(text: &str) -> std::io::Result<()> {
    let text = crate::log::redacted(text);
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}

/// `emit` for a command whose output is its result: the exit code says whether it arrived.
pub fn emit_result(text: &str) -> ExitCode {
    match emit(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, ErrorClass::Failed),
    }
}

/// Prints `error: ` and the error with its sources on stderr (an `error` event in JSON mode);
/// the class's exit code.
pub fn fail(e: &(dyn std::error::Error + 'static), class: ErrorClass) -> ExitCode {
    say_error(&segflow_core::error::chain(e), class)
}

/// Prints `error: ` and a message (a bad command line, found before anything ran); exit 2.
pub fn invalid(message: &str) -> ExitCode {
    say_error(message, ErrorClass::Invalid)
}

fn say_error(message: &str, class: ErrorClass) -> ExitCode {
    crate::log::event(
        "error",
        None,
        None,
        "error",
        serde_json::json!({
            "message": message,
            "error_class": class,
            "exit_code": class.exit_code(),
        }),
        || format!("error: {message}"),
    );
    ExitCode::from(class.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_have_their_documented_exit_codes() {
        let codes: Vec<u8> = [
            ErrorClass::Failed,
            ErrorClass::Invalid,
            ErrorClass::Data,
            ErrorClass::Transient,
            ErrorClass::Interrupted,
        ]
        .iter()
        .map(|c| c.exit_code())
        .collect();
        assert_eq!(codes, [1, 2, 3, 4, 130]);
    }
}
