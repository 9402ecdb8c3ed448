//! SecLang transformations (`t:lowercase`, `t:urlDecodeUni`, ...): pure functions from bytes to
//! bytes. Owns nothing but the functions; caching of results per variable is the engine's job.

use std::borrow::Cow;

/// One transformation function, resolved from its SecLang name at rule load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    Lowercase,
}

impl Transform {
    /// Looks a transformation up by its SecLang name (case-insensitive). `none` is not a
    /// transformation (the rule parser handles it by clearing the list), so it returns `None`,
    /// as does any unknown name.
    pub fn parse(name: &str) -> Option<Transform> {
        match name.to_ascii_lowercase().as_str() {
            "lowercase" => Some(Transform::Lowercase),
            _ => None,
        }
    }

    /// The SecLang name, as written in rules.
    pub fn name(self) -> &'static str {
        match self {
            Transform::Lowercase => "lowercase",
        }
    }

    /// Applies the transformation; borrows the input when nothing changes.
    pub fn apply(self, input: &[u8]) -> Cow<'_, [u8]> {
        match self {
            Transform::Lowercase => {
                if input.iter().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(input.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(input)
                }
            }
        }
    }
}
