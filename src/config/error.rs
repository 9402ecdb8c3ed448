//! Configuration errors an operator can act on: file, line, column, key, what is wrong.

use std::fmt;

/// Where a configuration error is and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub key: String,
    pub msg: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A problem at a known place in a file.
    #[error("{}", fmt_located(.0))]
    Located(Box<Located>),
    /// A file that cannot be read at all.
    #[error("{0}: cannot read: {1}")]
    Io(String, #[source] std::io::Error),
}

fn fmt_located(l: &Located) -> String {
    if l.key.is_empty() {
        format!("{}:{}:{}: {}", l.file, l.line, l.col, l.msg)
    } else {
        format!("{}:{}:{}: `{}`: {}", l.file, l.line, l.col, l.key, l.msg)
    }
}

impl ConfigError {
    pub fn located(&self) -> Option<&Located> {
        match self {
            ConfigError::Located(l) => Some(l),
            ConfigError::Io(..) => None,
        }
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_located(self))
    }
}
