//! `${VAR}` environment interpolation in the string values of a config.
//!
//! Only string values are touched, after parsing, so a secret holding quotes or newlines
//! cannot change the file's structure. `$$` writes a literal `$`.

use serde_json::Value;

/// A `${VAR}` that names no set variable, or a malformed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    /// Dotted key path of the value holding the reference.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Replaces every `${VAR}` in the string values under `value`; returns every problem.
pub fn interpolate(value: &mut Value, env: &dyn Fn(&str) -> Option<String>) -> Vec<InterpolationError> {
    interpolate_recording(value, env, &mut Vec::new())
}

/// As [`interpolate`], adding to `substituted` the key path and new text of every value
/// that took something from a variable: such a value may be a secret, and errors about
/// its key must not quote it.
pub fn interpolate_recording(
    value: &mut Value,
    env: &dyn Fn(&str) -> Option<String>,
    substituted: &mut Vec<(String, String)>,
) -> Vec<InterpolationError> {
    let mut errors = Vec::new();
    walk(value, &mut String::new(), env, &mut errors, substituted);
    errors
}

fn walk(
    value: &mut Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<InterpolationError>,
    substituted: &mut Vec<(String, String)>,
) {
    let len = path.len();
    match value {
        Value::String(text) if text.contains('$') => match substitute(text, env) {
            Ok(new) => {
                if text.contains("${") {
                    substituted.push((path.clone(), new.clone()));
                }
                *text = new;
            }
            Err(message) => errors.push(InterpolationError { path: path.clone(), message }),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push_str(&format!("[{i}]"));
                walk(item, path, env, errors, substituted);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&super::printable_key(key));
                walk(item, path, env, errors, substituted);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Substitutes the references in one string.
pub fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| "`${` without a closing `}`".to_string())?;
            let name = &body[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("`${{{name}}}` is not a valid environment variable reference"));
            }
            let value = env(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PASS").then(|| "p@ss\"word".to_string())
    }

    #[test]
    fn substitutes_and_escapes() {
        assert_eq!(substitute("a ${PASS} b", &env).unwrap(), "a p@ss\"word b");
        assert_eq!(substitute("cost $$5 and ^end$", &env).unwrap(), "cost $5 and ^end$");
        assert!(substitute("${NOPE}", &env).unwrap_err().contains("`NOPE` is not set"));
        assert!(substitute("${PASS", &env).is_err());
        assert!(substitute("${1X}", &env).is_err());
    }

    #[test]
    fn errors_name_the_key_path() {
        let mut value = serde_json::json!({"sinks": {"chat": {"headers": {"X": "${NOPE}"}, "list": ["${MISSING}"]}}});
        let errors = interpolate(&mut value, &env);
        assert_eq!(errors[0].path, "sinks.chat.headers.X");
        assert_eq!(errors[1].path, "sinks.chat.list[0]");
    }
}
