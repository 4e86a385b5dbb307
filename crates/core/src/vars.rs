//! Pipeline vars and `${name}` expansion.
//!
//! Expansion happens on parsed YAML strings, never on the file's text, so a var's value can
//! never change the structure of the pipeline. Var defaults may use other vars
//! (`runs: ${output}/_runs`); a var that refers to itself, directly or not, is an error.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::spec::{VarSpec, VarType};
use crate::yaml::Value;

/// Vars every pipeline has without declaring them.
pub const BUILTIN_VARS: &[(&str, &str)] = &[(
    "pipeline_dir",
    "absolute directory of the pipeline file, for paths that must not depend on the working directory",
)];

/// Resolved vars: name -> value, every `${...}` expanded. Written out (the manifest, commit
/// info, logs) with secrets blanked ([`Vars::redacted`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Vars(BTreeMap<String, String>);

/// What stands for a secret where vars are written out.
pub const REDACTED: &str = "***";

impl Vars {
    /// The vars as they may be written out: the password of a URL (`postgresql://user:pw@host/db`
    /// becomes `postgresql://user:***@host/db`) and the whole value of a var whose name says it
    /// is a secret (`..password..`, `..secret..`, `..token..`) blanked. A var is how a pipeline
    /// gets a database URL or a credential from the command line or `${env:...}`, and the
    /// manifest and logs are read by people who should not see them.
    pub fn redacted(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), redact(k, v)))
            .collect()
    }
}

fn redact(name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if ["password", "secret", "token"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return REDACTED.to_string();
    }
    match url::Url::parse(value) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some(REDACTED));
            url.to_string()
        }
        _ => value.to_string(),
    }
}

impl serde::Serialize for Vars {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.redacted().serialize(s)
    }
}

impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Vars").field(&self.redacted()).finish()
    }
}

impl Vars {
    /// Resolves declared vars against command-line overrides.
    pub fn resolve(
        file: &Path,
        declared: &BTreeMap<String, VarSpec>,
        overrides: &[(String, String)],
    ) -> Result<Vars> {
        let pipeline_dir = std::path::absolute(file)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let known = || {
            let mut k: Vec<String> = declared.keys().cloned().collect();
            k.extend(BUILTIN_VARS.iter().map(|(n, _)| n.to_string()));
            k
        };
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        raw.insert("pipeline_dir".into(), pipeline_dir.display().to_string());
        for (name, spec) in declared {
            if BUILTIN_VARS.iter().any(|(n, _)| n == name) {
                return Err(Error::Invalid {
                    file: file.to_path_buf(),
                    message: format!("var `{name}` is built in and cannot be declared; rename it"),
                });
            }
            if let Some(d) = &spec.default {
                raw.insert(name.clone(), d.clone());
            }
        }
        for (name, value) in overrides {
            if !declared.contains_key(name) {
                return Err(Error::UnknownVar {
                    file: file.to_path_buf(),
                    name: name.clone(),
                    known: known(),
                });
            }
            raw.insert(name.clone(), value.clone());
        }
        for name in declared.keys() {
            if !raw.contains_key(name) {
                return Err(Error::BadVar {
                    name: name.clone(),
                    message: format!(
                        "has no default in {}; pass --var {name}=VALUE",
                        file.display()
                    ),
                });
            }
        }
        let mut resolved = BTreeMap::new();
        for name in raw.keys() {
            let mut stack = Vec::new();
            let v = expand_var(file, name, &raw, &mut stack, &known)?;
            resolved.insert(name.clone(), v);
        }
        for (name, spec) in declared {
            check_type(name, spec.var_type, &resolved[name])?;
        }
        Ok(Vars(resolved))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    /// Expands every `${name}` in `text`. `$$` stands for a literal `$`.
    pub fn expand(&self, file: &Path, text: &str) -> Result<String> {
        expand_with(file, text, &mut |name| self.value(file, name))
    }

    /// The value of var `name`, or an error listing the known vars.
    fn value(&self, file: &Path, name: &str) -> Result<String> {
        self.0.get(name).cloned().ok_or_else(|| Error::UnknownVar {
            file: file.to_path_buf(),
            name: name.to_string(),
            known: self.0.keys().cloned().collect(),
        })
    }

    /// [`Vars::expand`], where `${env:NAME}` also reads the environment variable `NAME`: for
    /// storage options (credentials), whose values are never recorded anywhere.
    pub fn expand_with_env(&self, file: &Path, text: &str) -> Result<String> {
        expand_with(file, text, &mut |name| match name.strip_prefix("env:") {
            Some(env) => std::env::var(env.trim()).map_err(|_| Error::BadVar {
                name: name.to_string(),
                message: format!(
                    "environment variable `{}` is not set (read by the `storage:` block of {})",
                    env.trim(),
                    file.display()
                ),
            }),
            None => self.value(file, name),
        })
    }

    /// Expands vars in every string inside a YAML value.
    pub fn expand_value(&self, file: &Path, value: &mut Value) -> Result<()> {
        match value {
            Value::String(s) => *s = self.expand(file, s)?,
            Value::Sequence(items) => {
                for v in items {
                    self.expand_value(file, v)?;
                }
            }
            Value::Mapping(m) => {
                for (_, v) in m.iter_mut() {
                    self.expand_value(file, v)?;
                }
            }
            Value::Tagged(t) => self.expand_value(file, &mut t.value)?,
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
        Ok(())
    }
}

fn expand_var(
    file: &Path,
    name: &str,
    raw: &BTreeMap<String, String>,
    stack: &mut Vec<String>,
    known: &dyn Fn() -> Vec<String>,
) -> Result<String> {
    if stack.iter().any(|s| s == name) {
        stack.push(name.to_string());
        return Err(Error::Invalid {
            file: file.to_path_buf(),
            message: format!(
                "vars refer to each other in a loop: {}; give one of them a plain value",
                stack.join(" -> ")
            ),
        });
    }
    let Some(text) = raw.get(name) else {
        return Err(Error::UnknownVar {
            file: file.to_path_buf(),
            name: name.to_string(),
            known: known(),
        });
    };
    stack.push(name.to_string());
    let out = expand_with(file, text, &mut |n| expand_var(file, n, raw, stack, known))?;
    stack.pop();
    Ok(out)
}

fn expand_with(
    file: &Path,
    text: &str,
    lookup: &mut dyn FnMut(&str) -> Result<String>,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after_dollar) = after.strip_prefix('$') {
            out.push('$');
            rest = after_dollar;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(Error::Invalid {
                    file: file.to_path_buf(),
                    message: format!(
                        "unclosed `${{` in `{text}`; write `${{name}}`, or `$$` for a literal `$`"
                    ),
                });
            };
            out.push_str(&lookup(body[..end].trim())?);
            rest = &body[end + 1..];
        } else {
            // A lone `$` (e.g. `$as_of` in a SQL placeholder) is left alone.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn check_type(name: &str, ty: VarType, value: &str) -> Result<()> {
    let ok = match ty {
        VarType::String => true,
        VarType::Date => {
            value.is_empty() || chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok()
        }
        VarType::Int => value.parse::<i64>().is_ok(),
    };
    if ok {
        Ok(())
    } else {
        let want = match ty {
            VarType::Date => "a date as YYYY-MM-DD (or empty for the default)",
            VarType::Int => "an integer",
            VarType::String => "text",
        };
        Err(Error::BadVar {
            name: name.to_string(),
            message: format!("`{value}` is not {want}"),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_in_vars_are_blanked_where_vars_are_written() {
        let vars = Vars(BTreeMap::from([
            (
                "postgres_url".into(),
                "postgresql://sync:pw-7Q@db.internal:5432/crm".into(),
            ),
            ("api_token".into(), "tok-123".into()),
            ("output".into(), "s3://bucket/segments".into()),
        ]));
        let json = serde_json::to_string(&vars).unwrap();
        assert_eq!(
            json,
            r#"{"api_token":"***","output":"s3://bucket/segments","postgres_url":"postgresql://sync:***@db.internal:5432/crm"}"#
        );
        let debug = format!("{vars:?}");
        assert!(
            !debug.contains("pw-7Q") && !debug.contains("tok-123"),
            "{debug}"
        );
        // The run itself sees the values.
        assert_eq!(vars.get("api_token"), Some("tok-123"));
    }

    use super::*;

    fn var(default: &str, var_type: VarType) -> VarSpec {
        VarSpec {
            default: Some(default.into()),
            var_type,
            description: None,
        }
    }

    fn resolve(decl: &[(&str, VarSpec)], over: &[(&str, &str)]) -> Result<Vars> {
        let decl = decl
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let over: Vec<_> = over
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Vars::resolve(Path::new("/p/x.yaml"), &decl, &over)
    }

    #[test]
    fn defaults_may_use_other_vars_and_overrides_win() {
        let v = resolve(
            &[
                ("out", var("/o", VarType::String)),
                ("runs", var("${out}/_runs", VarType::String)),
            ],
            &[("out", "s3://b/x")],
        )
        .unwrap();
        assert_eq!(v.get("runs"), Some("s3://b/x/_runs"));
        assert_eq!(v.get("pipeline_dir"), Some("/p"));
    }

    #[test]
    fn unknown_override_lists_known_vars() {
        let err = resolve(&[("a", var("1", VarType::String))], &[("b", "2")]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`${b}` is not a pipeline var"), "{msg}");
        assert!(msg.contains("vars: a, pipeline_dir"), "{msg}");
    }

    #[test]
    fn self_reference_is_reported_as_a_loop() {
        let err = resolve(
            &[
                ("a", var("${b}", VarType::String)),
                ("b", var("${a}", VarType::String)),
            ],
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("a -> b -> a"), "{err}");
    }

    #[test]
    fn typed_vars_are_checked() {
        assert!(resolve(&[("d", var("2026-02-30", VarType::Date))], &[]).is_err());
        assert!(resolve(&[("d", var("", VarType::Date))], &[]).is_ok());
        assert!(resolve(&[("n", var("x", VarType::Int))], &[]).is_err());
    }

    #[test]
    fn dollar_placeholders_and_escapes_pass_through() {
        let v = resolve(&[("a", var("1", VarType::String))], &[]).unwrap();
        let f = Path::new("f");
        assert_eq!(v.expand(f, "x ${a} $as_of $$").unwrap(), "x 1 $as_of $");
        assert!(v.expand(f, "${a").is_err());
    }

    #[test]
    fn env_references_only_in_storage_options() {
        let v = resolve(&[("a", var("1", VarType::String))], &[]).unwrap();
        let f = Path::new("f");
        let home = std::env::var("PATH").unwrap();
        assert_eq!(
            v.expand_with_env(f, "${env:PATH}/${a}").unwrap(),
            format!("{home}/1")
        );
        assert!(v.expand(f, "${env:PATH}").is_err());
        let err = v
            .expand_with_env(f, "${env:SEGFLOW_SURELY_UNSET}")
            .unwrap_err();
        assert!(err.to_string().contains("SEGFLOW_SURELY_UNSET"), "{err}");
    }

    proptest::proptest! {
        /// Any text, any values: `${...}` expansion never panics (a bad reference is a typed
        /// error), a var's value is put in whole, and `$$` is a literal `$`.
        #[test]
        fn prop_expansion_never_panics_and_puts_values_in_whole(
            text in "[a-z${}:.\\\\ ]{0,40}",
            value in "[^$\\x00]{0,16}",
        ) {
            let vars = resolve(&[("a", var(&value, VarType::String))], &[]).unwrap();
            match vars.expand(Path::new("/p/x.yaml"), &text) {
                Ok(_) => {}
                Err(e) => proptest::prop_assert!(
                    matches!(e, Error::Invalid { .. } | Error::UnknownVar { .. }),
                    "{e:?}"
                ),
            }
            let expanded = vars.expand(Path::new("/p/x.yaml"), "$${a}<${a}>").unwrap();
            proptest::prop_assert_eq!(expanded, format!("${{a}}<{value}>"));
        }
    }
}
