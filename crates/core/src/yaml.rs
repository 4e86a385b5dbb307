//! All YAML parsing goes through this module.
//!
//! serde_yaml is archived; keeping every call to it here means moving to a maintained fork is a
//! change to one file. serde_yaml reports positions for errors while it reads text, but a value
//! that was first read into a `serde_yaml::Value` (a stage's kind-specific keys) has lost its
//! position, so [`locate_key`] finds the line of a key again from the text.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Location, Result};

pub use serde_yaml::{Mapping, Value};

/// Parses `text` (the contents of `file`) into `T`, with `file:line:column` on errors.
pub fn from_str<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T> {
    serde_yaml::from_str(text).map_err(|e| Error::Spec {
        file: file.to_path_buf(),
        location: e.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        }),
        message: clean_message(&e.to_string()),
    })
}

/// Converts an already parsed value into `T`; the caller adds the position.
pub fn from_value<T: DeserializeOwned>(value: Value) -> std::result::Result<T, String> {
    serde_yaml::from_value(value).map_err(|e| clean_message(&e.to_string()))
}

/// Serializes `value` as YAML text.
pub fn to_string<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_yaml::to_string(value).map_err(|e| Error::Internal(format!("serializing YAML: {e}")))
}

/// serde_yaml appends " at line L column C" to its messages; we print the position in front.
fn clean_message(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => message[..i].to_string(),
        _ => message.to_string(),
    }
}

/// The position of `key:` in `text`, searching from the line of `anchor` (a `key: value` pair
/// that identifies the enclosing mapping, such as `id: rfm`) to the end of that mapping's block.
/// Without an anchor the whole text is searched.
pub fn locate_key(text: &str, anchor: Option<(&str, &str)>, key: &str) -> Option<Location> {
    let lines: Vec<&str> = text.lines().collect();
    let start = match anchor {
        Some((k, v)) => lines.iter().position(|l| is_pair(l, k, v))?,
        None => 0,
    };
    // The enclosing block ends at the next list item or key indented no deeper than the anchor.
    let anchor_indent = indent_of(lines[start]);
    for (i, line) in lines.iter().enumerate().skip(start) {
        let body = line.trim_start_matches([' ', '-']);
        if i > start && !body.is_empty() && !body.starts_with('#') {
            let ind = indent_of(line);
            if anchor.is_some() && ind < anchor_indent {
                break;
            }
            if anchor.is_some() && line.trim_start().starts_with('-') && ind <= anchor_indent {
                break;
            }
        }
        if let Some(rest) = body.strip_prefix(key)
            && rest.trim_start().starts_with(':')
        {
            let column = line.len() - body.len() + 1;
            return Some(Location {
                line: i + 1,
                column,
            });
        }
    }
    anchor.map(|_| Location {
        line: start + 1,
        column: indent_of(lines[start]) + 1,
    })
}

/// The column where a line's first key starts, counting a list dash as indentation.
fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches([' ', '-']).len()
}

fn is_pair(line: &str, key: &str, value: &str) -> bool {
    let body = line.trim_start_matches([' ', '-']);
    let Some(rest) = body.strip_prefix(key) else {
        return false;
    };
    let Some(v) = rest.trim_start().strip_prefix(':') else {
        return false;
    };
    let v = v.split(" #").next().unwrap_or("").trim();
    v.trim_matches(['"', '\'']) == value
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name: p\nstages:\n  - id: a\n    kind: x\n    sql: a.sql\n  - id: b\n    kind: y\n    sqll: b.sql\n";

    #[test]
    fn locates_key_inside_the_anchored_stage() {
        let loc = locate_key(TEXT, Some(("id", "b")), "sqll").unwrap();
        assert_eq!(loc, Location { line: 8, column: 5 });
    }

    #[test]
    fn key_of_another_stage_is_not_found_and_falls_back_to_the_anchor() {
        let loc = locate_key(TEXT, Some(("id", "a")), "sqll").unwrap();
        assert_eq!(loc, Location { line: 3, column: 5 });
    }

    #[test]
    fn parse_errors_carry_line_and_column() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: i32,
        }
        let err = from_str::<T>(Path::new("f.yaml"), "a: 1\nb: 2\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("f.yaml:2:1: unknown field `b`, expected `a`"),
            "{msg}"
        );
    }
}
