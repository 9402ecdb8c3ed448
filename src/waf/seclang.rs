//! The SecLang (ModSecurity rule language) loader: reads rule files as written — line
//! continuations, quoting, `Include` with globs — into directives that keep their file and
//! line, and checks each rule's variables, operator, transformations and actions against
//! what cong implements. A syntax error names file:line; anything cong does not support is
//! a warning naming file:line and the rule id, never silently dropped. It must not evaluate
//! rules or know about requests: compiling them into a rule set is the engine's job.

use super::operators::{OpError, Operator};
use super::transforms::Transform;
use std::fmt;
use std::path::{Path, PathBuf};

/// One directive with where it was written.
#[derive(Debug, Clone)]
pub struct Directive {
    pub file: PathBuf,
    pub line: usize,
    pub kind: Kind,
}

/// The directives cong reads. Arguments are unquoted; backslash escapes other than `\"` are
/// kept as written (the operator or action that reads them decides).
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Rule {
        variables: String,
        operator: String,
        actions: String,
    },
    Action(String),
    Marker(String),
    DefaultAction(String),
    RemoveById(Vec<String>),
    RemoveByTag(String),
    RemoveByMsg(String),
    UpdateTargetById {
        ids: String,
        targets: String,
    },
    UpdateTargetByTag {
        tag: String,
        targets: String,
    },
    UpdateActionById {
        id: String,
        actions: String,
    },
    /// Engine settings (`SecRuleEngine On`, `SecRequestBodyLimit 13107200`, ...).
    Setting {
        name: String,
        args: Vec<String>,
    },
}

/// A rule file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// Something a rule asks for that cong does not do; the rule is still loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub rule_id: Option<u64>,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if let Some(id) = self.rule_id {
            write!(f, " (rule {id})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Settings cong reads (or accepts as no-ops because they concern things it does itself).
const SETTINGS: &[&str] = &[
    "SecRuleEngine",
    "SecRequestBodyAccess",
    "SecResponseBodyAccess",
    "SecRequestBodyLimit",
    "SecRequestBodyNoFilesLimit",
    "SecRequestBodyInMemoryLimit",
    "SecRequestBodyLimitAction",
    "SecResponseBodyLimit",
    "SecResponseBodyLimitAction",
    "SecResponseBodyMimeType",
    "SecComponentSignature",
    "SecCollectionTimeout",
    "SecArgumentSeparator",
    "SecCookieFormat",
    "SecUnicodeMapFile",
    "SecPcreMatchLimit",
    "SecPcreMatchLimitRecursion",
    "SecTmpDir",
    "SecDataDir",
    "SecUploadDir",
    "SecUploadKeepFiles",
    "SecAuditEngine",
    "SecAuditLog",
    "SecAuditLogParts",
    "SecAuditLogType",
    "SecAuditLogFormat",
    "SecAuditLogRelevantStatus",
    "SecAuditLogStorageDir",
    "SecDebugLog",
    "SecDebugLogLevel",
    "SecStatusEngine",
    "SecServerSignature",
    "SecWebAppId",
    "SecXmlExternalEntity",
];

/// Reads a rule file (and everything it includes) into directives.
pub fn parse_file(path: &Path) -> Result<Vec<Directive>, SyntaxError> {
    let mut out = Vec::new();
    parse_into(path, &mut out, 0)?;
    Ok(out)
}

/// Reads rule text as if it came from `file` (includes are resolved against its directory).
pub fn parse_str(text: &str, file: &Path) -> Result<Vec<Directive>, SyntaxError> {
    let mut out = Vec::new();
    parse_text(text, file, &mut out, 0)?;
    Ok(out)
}

fn parse_into(path: &Path, out: &mut Vec<Directive>, depth: usize) -> Result<(), SyntaxError> {
    let text = std::fs::read_to_string(path).map_err(|e| SyntaxError {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse_text(&text, path, out, depth)
}

fn parse_text(
    text: &str,
    file: &Path,
    out: &mut Vec<Directive>,
    depth: usize,
) -> Result<(), SyntaxError> {
    let err = |line: usize, message: String| SyntaxError {
        file: file.to_path_buf(),
        line,
        message,
    };
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, first)) = lines.next() {
        let start = n + 1;
        // Join continuation lines (a trailing backslash).
        let mut logical = first.trim_end().to_string();
        while logical.ends_with('\\') {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_end()),
                None => break,
            }
        }
        let trimmed = logical.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let args = split_args(trimmed).map_err(|m| err(start, m))?;
        let Some((name, rest)) = args.split_first() else {
            continue;
        };
        let want = |count: usize| -> Result<(), SyntaxError> {
            if rest.len() == count {
                Ok(())
            } else {
                Err(err(
                    start,
                    format!("{name} takes {count} argument(s), found {}", rest.len()),
                ))
            }
        };
        let kind = match name.as_str() {
            "SecRule" => {
                if rest.len() != 2 && rest.len() != 3 {
                    return Err(err(
                        start,
                        format!("SecRule takes 2 or 3 arguments, found {}", rest.len()),
                    ));
                }
                Kind::Rule {
                    variables: rest[0].clone(),
                    operator: rest[1].clone(),
                    actions: rest.get(2).cloned().unwrap_or_default(),
                }
            }
            "SecAction" => {
                want(1)?;
                Kind::Action(rest[0].clone())
            }
            "SecMarker" => {
                want(1)?;
                Kind::Marker(rest[0].clone())
            }
            "SecDefaultAction" => {
                want(1)?;
                Kind::DefaultAction(rest[0].clone())
            }
            "SecRuleRemoveById" => Kind::RemoveById(rest.to_vec()),
            "SecRuleRemoveByTag" => {
                want(1)?;
                Kind::RemoveByTag(rest[0].clone())
            }
            "SecRuleRemoveByMsg" => {
                want(1)?;
                Kind::RemoveByMsg(rest[0].clone())
            }
            "SecRuleUpdateTargetById" => {
                want(2)?;
                Kind::UpdateTargetById {
                    ids: rest[0].clone(),
                    targets: rest[1].clone(),
                }
            }
            "SecRuleUpdateTargetByTag" => {
                want(2)?;
                Kind::UpdateTargetByTag {
                    tag: rest[0].clone(),
                    targets: rest[1].clone(),
                }
            }
            "SecRuleUpdateActionById" => {
                want(2)?;
                Kind::UpdateActionById {
                    id: rest[0].clone(),
                    actions: rest[1].clone(),
                }
            }
            "Include" | "IncludeOptional" => {
                want(1)?;
                if depth > 16 {
                    return Err(err(start, "includes nested too deeply".into()));
                }
                let base = file.parent().unwrap_or(Path::new("."));
                let pattern = base.join(&rest[0]);
                let files = glob(&pattern).map_err(|m| err(start, m))?;
                if files.is_empty() && name == "Include" && !rest[0].contains('*') {
                    return Err(err(start, format!("{}: no such file", pattern.display())));
                }
                for f in files {
                    parse_into(&f, out, depth + 1)?;
                }
                continue;
            }
            s if SETTINGS.contains(&s) => Kind::Setting {
                name: s.to_string(),
                args: rest.to_vec(),
            },
            other => return Err(err(start, format!("unknown directive {other}"))),
        };
        out.push(Directive {
            file: file.to_path_buf(),
            line: start,
            kind,
        });
    }
    Ok(())
}

/// Splits a directive line into words; double-quoted words may hold spaces and `\"`.
fn split_args(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let mut word = String::new();
        if c == '"' || c == '\'' {
            let quote = c;
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&quote) {
                    word.push(quote);
                    chars.next();
                } else if c == quote {
                    closed = true;
                    break;
                } else {
                    word.push(c);
                }
            }
            if !closed {
                return Err(format!("unterminated {quote}-quoted argument"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

/// `*` globs in the file-name part of an include (as rule sets use them: `rules/*.conf`),
/// sorted so files load in name order like ModSecurity's.
fn glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let name = pattern
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("bad include {}", pattern.display()))?;
    if !name.contains('*') {
        return Ok(if pattern.exists() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let parts: Vec<&str> = name.split('*').collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| wildcard(&parts, n))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn wildcard(parts: &[&str], name: &str) -> bool {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    true
}

/// One action of an action list: `name` or `name:value` (quotes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub name: String,
    pub value: Option<String>,
}

/// Splits `id:1,phase:2,msg:'a, b',t:none` into actions.
pub fn parse_actions(text: &str) -> Result<Vec<Action>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ':' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let name = name.trim().to_string();
        let mut value = None;
        if chars.peek() == Some(&':') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ') {
                chars.next();
            }
            let mut v = String::new();
            if chars.peek() == Some(&'\'') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == '\\' && chars.peek() == Some(&'\'') {
                        v.push('\'');
                        chars.next();
                    } else if c == '\'' {
                        closed = true;
                        break;
                    } else {
                        v.push(c);
                    }
                }
                if !closed {
                    return Err(format!("unterminated quote in action {name}"));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                v = v.trim_end().to_string();
            }
            value = Some(v);
        }
        if name.is_empty() {
            return Err("empty action name".into());
        }
        out.push(Action { name, value });
    }
    Ok(out)
}

/// One target of a rule: `!ARGS:foo`, `&TX:score`, `REQUEST_HEADERS:/^x-/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub negated: bool,
    pub count: bool,
    pub collection: String,
    pub selector: Option<Selector>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Key(String),
    Regex(String),
}

/// Splits `ARGS|!ARGS:foo|REQUEST_HEADERS:/^x-(a|b)/` into targets (a `|` inside a regex
/// selector or quotes does not split).
pub fn parse_targets(text: &str) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_regex = false;
    let mut in_quote = false;
    let mut after_colon = false;
    let mut prev = '\0';
    for c in text.chars() {
        match c {
            '|' if !in_regex && !in_quote => {
                out.push(target(&cur)?);
                cur.clear();
                after_colon = false;
                prev = c;
                continue;
            }
            // XML's selector is an XPath expression, not a regex.
            ':' if !in_regex && !in_quote && !after_colon => {
                after_colon = !cur
                    .trim_start_matches(['!', '&'])
                    .eq_ignore_ascii_case("XML");
            }
            '/' if after_colon && !in_quote && (prev == ':' || (in_regex && prev != '\\')) => {
                in_regex = !in_regex;
            }
            '\'' if after_colon && !in_regex => in_quote = !in_quote,
            _ => {}
        }
        cur.push(c);
        prev = c;
    }
    if in_regex || in_quote {
        return Err(format!("unterminated selector in {text}"));
    }
    if !cur.trim().is_empty() {
        out.push(target(&cur)?);
    }
    Ok(out)
}

fn target(text: &str) -> Result<Target, String> {
    let mut t = text.trim();
    let negated = t.starts_with('!');
    if negated {
        t = &t[1..];
    }
    let count = t.starts_with('&');
    if count {
        t = &t[1..];
    }
    let (collection, selector) = match t.split_once(':') {
        Some((c, s)) => {
            let s = s.trim();
            let sel = if s.len() >= 2 && s.starts_with('/') && s.ends_with('/') {
                Selector::Regex(s[1..s.len() - 1].to_string())
            } else if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
                Selector::Key(s[1..s.len() - 1].to_string())
            } else {
                Selector::Key(s.to_string())
            };
            (c, Some(sel))
        }
        None => (t, None),
    };
    if collection.is_empty() {
        return Err(format!("empty variable in {text:?}"));
    }
    Ok(Target {
        negated,
        count,
        collection: collection.to_ascii_uppercase(),
        selector,
    })
}

/// Variables cong provides to rules.
pub const VARIABLES: &[&str] = &[
    "ARGS",
    "ARGS_COMBINED_SIZE",
    "ARGS_GET",
    "ARGS_GET_NAMES",
    "ARGS_NAMES",
    "ARGS_POST",
    "ARGS_POST_NAMES",
    "AUTH_TYPE",
    "DURATION",
    "FILES",
    "FILES_COMBINED_SIZE",
    "FILES_NAMES",
    "FILES_SIZES",
    "FULL_REQUEST_LENGTH",
    "GEO",
    "GLOBAL",
    "IP",
    "MATCHED_VAR",
    "MATCHED_VARS",
    "MATCHED_VAR_NAME",
    "MATCHED_VARS_NAMES",
    "MULTIPART_BOUNDARY_QUOTED",
    "MULTIPART_BOUNDARY_WHITESPACE",
    "MULTIPART_DATA_AFTER",
    "MULTIPART_DATA_BEFORE",
    "MULTIPART_FILE_LIMIT_EXCEEDED",
    "MULTIPART_FILENAME",
    "MULTIPART_HEADER_FOLDING",
    "MULTIPART_INVALID_HEADER_FOLDING",
    "MULTIPART_INVALID_PART",
    "MULTIPART_INVALID_QUOTING",
    "MULTIPART_LF_LINE",
    "MULTIPART_MISSING_SEMICOLON",
    "MULTIPART_NAME",
    "MULTIPART_PART_HEADERS",
    "MULTIPART_STRICT_ERROR",
    "MULTIPART_UNMATCHED_BOUNDARY",
    "QUERY_STRING",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "REQBODY_ERROR",
    "REQBODY_ERROR_MSG",
    "REQBODY_PROCESSOR",
    "REQBODY_PROCESSOR_ERROR",
    "REQUEST_BASENAME",
    "REQUEST_BODY",
    "REQUEST_BODY_LENGTH",
    "REQUEST_COOKIES",
    "REQUEST_COOKIES_NAMES",
    "REQUEST_FILENAME",
    "REQUEST_HEADERS",
    "REQUEST_HEADERS_NAMES",
    "REQUEST_LINE",
    "REQUEST_METHOD",
    "REQUEST_PROTOCOL",
    "REQUEST_URI",
    "REQUEST_URI_RAW",
    "RESOURCE",
    "RESPONSE_BODY",
    "RESPONSE_CONTENT_LENGTH",
    "RESPONSE_CONTENT_TYPE",
    "RESPONSE_HEADERS",
    "RESPONSE_HEADERS_NAMES",
    "RESPONSE_PROTOCOL",
    "RESPONSE_STATUS",
    "RULE",
    "SERVER_ADDR",
    "SERVER_NAME",
    "SERVER_PORT",
    "SESSION",
    "STATUS_LINE",
    "TIME",
    "TIME_DAY",
    "TIME_EPOCH",
    "TIME_HOUR",
    "TIME_MIN",
    "TIME_MON",
    "TIME_SEC",
    "TIME_WDAY",
    "TIME_YEAR",
    "TX",
    "UNIQUE_ID",
    "URLENCODED_ERROR",
    "USER",
    "XML",
];

/// Actions cong understands.
pub const ACTIONS: &[&str] = &[
    "accuracy",
    "allow",
    "auditlog",
    "block",
    "capture",
    "chain",
    "ctl",
    "deny",
    "drop",
    "expirevar",
    "id",
    "initcol",
    "log",
    "logdata",
    "maturity",
    "msg",
    "multiMatch",
    "noauditlog",
    "nolog",
    "pass",
    "phase",
    "redirect",
    "rev",
    "setenv",
    "setsid",
    "setuid",
    "setvar",
    "severity",
    "skip",
    "skipAfter",
    "status",
    "t",
    "tag",
    "ver",
];

/// `ctl:` options cong understands.
const CTLS: &[&str] = &[
    "ruleEngine",
    "ruleRemoveById",
    "ruleRemoveByTag",
    "ruleRemoveByMsg",
    "ruleRemoveTargetById",
    "ruleRemoveTargetByTag",
    "ruleRemoveTargetByMsg",
    "requestBodyProcessor",
    "requestBodyAccess",
    "requestBodyLimit",
    "forceRequestBodyVariable",
    "auditEngine",
    "auditLogParts",
    "responseBodyAccess",
];

/// Checks every rule of `directives` against what cong implements. Returns the warnings
/// (unsupported variables, operators, transformations, actions) or the first error that
/// makes a rule meaningless (a regex that does not compile, a malformed action list).
pub fn check(directives: &[Directive]) -> Result<Vec<Warning>, SyntaxError> {
    let mut warnings = Vec::new();
    // Rules of a chain after the first carry no id: they are reported under the chain's.
    let mut chain_id: Option<u64> = None;
    for d in directives {
        let (targets, operator, actions) = match &d.kind {
            Kind::Rule {
                variables,
                operator,
                actions,
            } => (Some(variables), Some(operator), actions),
            Kind::Action(actions) | Kind::DefaultAction(actions) => (None, None, actions),
            _ => continue,
        };
        let err = |message: String| SyntaxError {
            file: d.file.clone(),
            line: d.line,
            message,
        };
        let parsed = parse_actions(actions).map_err(&err)?;
        let rule_id = parsed
            .iter()
            .find(|a| a.name == "id")
            .and_then(|a| a.value.as_deref())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .or(chain_id);
        chain_id = if parsed.iter().any(|a| a.name == "chain") {
            rule_id
        } else {
            None
        };
        let mut warn = |message: String| {
            warnings.push(Warning {
                file: d.file.clone(),
                line: d.line,
                rule_id,
                message,
            })
        };
        for a in &parsed {
            if !ACTIONS.contains(&a.name.as_str()) {
                warn(format!("unsupported action {}", a.name));
            } else if a.name == "t" {
                let t = a.value.as_deref().unwrap_or_default();
                if t != "none" && Transform::parse(t).is_none() {
                    warn(format!("unsupported transformation t:{t}"));
                }
            } else if a.name == "ctl" {
                let opt = a
                    .value
                    .as_deref()
                    .and_then(|v| v.split('=').next())
                    .unwrap_or_default();
                if !CTLS.contains(&opt) {
                    warn(format!("unsupported ctl:{opt}"));
                }
            }
        }
        if let Some(targets) = targets {
            for t in parse_targets(targets).map_err(&err)? {
                if !VARIABLES.contains(&t.collection.as_str()) {
                    warn(format!("unsupported variable {}", t.collection));
                }
            }
        }
        if let Some(op) = operator {
            let (negated, name, param) = split_operator(op);
            let base = d.file.parent().unwrap_or(Path::new("."));
            match Operator::compile(name, param, negated, base) {
                Ok(_) => {}
                Err(OpError::Unsupported(n)) => warn(format!("unsupported operator @{n}")),
                Err(e) => return Err(err(e.to_string())),
            }
        }
    }
    Ok(warnings)
}

/// `"!@rx foo"` → (negated, "rx", "foo"); a bare pattern is `@rx`.
pub fn split_operator(op: &str) -> (bool, &str, &str) {
    let op = op.trim_start();
    let (negated, op) = match op.strip_prefix('!') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, op),
    };
    match op.strip_prefix('@') {
        Some(rest) => {
            let (name, param) = rest.split_once(' ').unwrap_or((rest, ""));
            (negated, name, param)
        }
        None => (negated, "rx", op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_quotes_and_actions() {
        let text = "# comment\nSecRule ARGS|!ARGS:foo \"@rx a\\\"b\" \\\n    \"id:1,\\\n    phase:2,msg:'x, \\'y\\'',t:none,t:lowercase\"\nSecMarker END\n";
        let d = parse_str(text, Path::new("t.conf")).expect("parses");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].line, 2);
        let Kind::Rule {
            variables,
            operator,
            actions,
        } = &d[0].kind
        else {
            panic!("not a rule")
        };
        assert_eq!(variables, "ARGS|!ARGS:foo");
        assert_eq!(operator, "@rx a\"b");
        let a = parse_actions(actions).expect("actions");
        assert_eq!(a[2].value.as_deref(), Some("x, 'y'"));
        assert_eq!(a.len(), 5);
        assert_eq!(d[1].kind, Kind::Marker("END".into()));
    }

    #[test]
    fn targets_with_regex_selectors() {
        let t = parse_targets("REQUEST_HEADERS:/^(a|b)$/|!ARGS:'x|y'|&TX:score").expect("ok");
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].selector, Some(Selector::Regex("^(a|b)$".into())));
        assert!(t[1].negated);
        assert_eq!(t[1].selector, Some(Selector::Key("x|y".into())));
        assert!(t[2].count);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse_str(
            "SecRuleEngine On\n\nSecRule ARGS \"@rx x\n",
            Path::new("bad.conf"),
        )
        .expect_err("unterminated");
        assert_eq!((e.line, e.file.as_path()), (3, Path::new("bad.conf")));
        let e = parse_str("SecNoSuch x\n", Path::new("bad.conf")).expect_err("unknown");
        assert!(e
            .to_string()
            .starts_with("bad.conf:1: unknown directive SecNoSuch"));
        let d =
            parse_str("SecRule ARGS \"@rx (\" \"id:5\"\n", Path::new("r.conf")).expect("parses");
        assert!(check(&d)
            .expect_err("bad regex")
            .to_string()
            .starts_with("r.conf:1:"));
    }

    #[test]
    fn unsupported_things_are_warnings_with_rule_ids() {
        let d = parse_str(
            "SecRule REMOTE_ADDR \"@rbl x\" \"id:7,phase:1,pass,t:weird,chain\"\n  SecRule ARGS \"@geoLookup\"\n",
            Path::new("w.conf"),
        )
        .expect("parses");
        let w = check(&d).expect("loads");
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w.iter().all(|w| w.rule_id == Some(7)));
        assert_eq!(w[2].line, 2);
    }

    /// Debian's CRS loads unmodified, with the suite's setup file first.
    #[test]
    fn debian_crs_loads() {
        let setup = Path::new("/etc/modsecurity/crs/crs-setup.conf");
        let rules = Path::new("/usr/share/modsecurity-crs/rules");
        if !setup.exists() || !rules.exists() {
            eprintln!("modsecurity-crs not installed");
            return;
        }
        let text = format!(
            "Include {}\nInclude {}/*.conf\n",
            setup.display(),
            rules.display()
        );
        let d = parse_str(&text, Path::new("/etc/cong/waf.conf")).expect("CRS parses");
        let rules_count = d
            .iter()
            .filter(|d| matches!(d.kind, Kind::Rule { .. }))
            .count();
        assert!(rules_count > 600, "{rules_count} rules");
        let warnings = check(&d).expect("CRS checks");
        for w in &warnings {
            eprintln!("{w}");
        }
        // Only the IP-reputation and GeoIP lookups (which cong does at the access step
        // instead) may be unsupported.
        assert!(
            warnings
                .iter()
                .all(|w| w.message.contains("@rbl") || w.message.contains("@geoLookup")),
            "{warnings:?}"
        );
    }
}
