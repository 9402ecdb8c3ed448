//! `cong tenant new`: writes a valid tenant file from command-line arguments, so adding a
//! commune portal is one command. The text is checked (and, with a main configuration, checked
//! together with every other tenant) before anything is written.

use super::{SourceFile, TenantConfig};

/// What `cong tenant new` was given.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub id: String,
    pub name: Option<String>,
    pub hosts: Vec<String>,
    pub backends: Vec<String>,
    pub health_path: Option<String>,
}

fn quote(s: &str) -> String {
    // TOML basic string: escape backslash, quote and control characters.
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", v.join(", "))
}

/// The tenant file's text.
pub fn render(t: &NewTenant) -> String {
    let mut s = String::new();
    s.push_str(&format!("id = {}\n", quote(&t.id)));
    if let Some(n) = &t.name {
        s.push_str(&format!("name = {}\n", quote(n)));
    }
    s.push_str(&format!("hosts = {}\n\n", list(&t.hosts)));
    s.push_str(&format!("[pools.main]\nbackends = {}\n", list(&t.backends)));
    if let Some(p) = &t.health_path {
        s.push_str(&format!("\n[pools.main.health]\npath = {}\n", quote(p)));
    }
    s
}

/// Parses the rendered text as a tenant file would be parsed.
pub fn parse(path: &str, text: &str) -> Result<TenantConfig, String> {
    let src = SourceFile {
        path: path.to_string(),
        text: text.to_string(),
    };
    src.parse().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_parseable_file() {
        let t = NewTenant {
            id: "camson".into(),
            name: Some("Xã Cẩm Sơn \"mới\"".into()),
            hosts: vec!["camson.quangninh.gov.vn".into()],
            backends: vec!["10.0.0.5:80".into(), "[2001:db8::5]:80".into()],
            health_path: Some("/health".into()),
        };
        let text = render(&t);
        let parsed = parse("x.toml", &text).unwrap();
        assert_eq!(parsed.id.get_ref(), "camson");
        assert_eq!(parsed.name.as_deref(), Some("Xã Cẩm Sơn \"mới\""));
        assert_eq!(parsed.pools["main"].backends.len(), 2);
        assert_eq!(
            parsed.pools["main"].health.as_ref().unwrap().path,
            "/health"
        );
    }
}
