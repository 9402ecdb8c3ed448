//! SecLang operators (`@rx`, `@pm`, `@detectSQLi`, ...): compiled once at rule load, evaluated
//! against one transformed value at a time. Owns pattern compilation and matching; it knows
//! nothing of variables, rules or transactions beyond the `Macros` it is handed.

use std::borrow::Cow;
use std::path::Path;

/// Expands `%{tx.name}`-style macros in an operator parameter at evaluation time.
pub trait Macros {
    fn expand<'a>(&self, text: &'a str) -> Cow<'a, str>;
}

/// A compiled operator. `@!rx` style negation is part of it.
#[derive(Debug)]
pub struct Operator {
    pub name: &'static str,
    pub negated: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Rx(regex::bytes::Regex),
    UnconditionalMatch,
}

/// Why an operator could not be compiled (the loader adds file:line and rule id).
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("unsupported operator @{0}")]
    Unsupported(String),
    #[error("@{op}: {msg}")]
    Invalid { op: String, msg: String },
}

impl Operator {
    /// Compiles `@name param`. `base_dir` is the directory of the rule file, against which
    /// `@pmFromFile`/`@ipMatchFromFile` paths are resolved.
    pub fn compile(
        name: &str,
        param: &str,
        negated: bool,
        _base_dir: &Path,
    ) -> Result<Operator, OpError> {
        let kind = match name.to_ascii_lowercase().as_str() {
            "rx" => Kind::Rx(
                regex::bytes::Regex::new(param).map_err(|e| OpError::Invalid {
                    op: name.to_string(),
                    msg: e.to_string(),
                })?,
            ),
            "unconditionalmatch" => Kind::UnconditionalMatch,
            _ => return Err(OpError::Unsupported(name.to_string())),
        };
        let name = match kind {
            Kind::Rx(_) => "rx",
            Kind::UnconditionalMatch => "unconditionalMatch",
        };
        Ok(Operator {
            name,
            negated,
            kind,
        })
    }

    /// Evaluates against one value. With `capture`, `captures` receives TX:0..9 (group 0 the
    /// whole match); it is cleared first. Negation is applied here.
    pub fn matches(
        &self,
        input: &[u8],
        _macros: &dyn Macros,
        capture: bool,
        captures: &mut Vec<Vec<u8>>,
    ) -> bool {
        if capture {
            captures.clear();
        }
        let hit = match &self.kind {
            Kind::Rx(re) => {
                if capture {
                    match re.captures(input) {
                        Some(c) => {
                            for g in c.iter().take(10) {
                                captures.push(g.map(|m| m.as_bytes().to_vec()).unwrap_or_default());
                            }
                            true
                        }
                        None => false,
                    }
                } else {
                    re.is_match(input)
                }
            }
            Kind::UnconditionalMatch => true,
        };
        hit != self.negated
    }
}
