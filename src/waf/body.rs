//! Request body processors (urlencoded, multipart, JSON, XML) that turn a streamed body into the
//! variables rules inspect. Owns parsing and its limits; it never keeps more than the inspection
//! limit of a body and never decides anything about a request.

/// What a body yields for the rules.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    /// ARGS_POST (name, value) in order; JSON is flattened (`json.a.b`) as ModSecurity does.
    pub args: Vec<(Vec<u8>, Vec<u8>)>,
    /// Multipart file parts.
    pub files: Vec<FilePart>,
    /// Extra named variables set by the processor (e.g. `MULTIPART_STRICT_ERROR` → "1",
    /// `MULTIPART_BOUNDARY_QUOTED`, `FILES_COMBINED_SIZE`), keyed by upper-case name.
    pub vars: Vec<(&'static str, Vec<u8>)>,
    /// MULTIPART_PART_HEADERS values (one entry per header line of every part).
    pub part_headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// XML text nodes / attribute values for `XML:/*`.
    pub xml: Vec<Vec<u8>>,
    /// REQBODY_ERROR / REQBODY_ERROR_MSG: set when the body could not be parsed.
    pub error: Option<String>,
}

/// One uploaded file of a multipart body: field name, file name, size (body not kept).
#[derive(Debug, Default, Clone)]
pub struct FilePart {
    pub field: Vec<u8>,
    pub filename: Vec<u8>,
    pub size: u64,
}

/// Which processor reads the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    UrlEncoded,
    Multipart,
    Json,
    Xml,
}

impl Kind {
    /// Picks the processor for a Content-Type the way ModSecurity does by default
    /// (`ctl:requestBodyProcessor` may override it).
    pub fn for_content_type(ct: &str) -> Option<Kind> {
        let ct = ct.trim_start().to_ascii_lowercase();
        if ct.starts_with("application/x-www-form-urlencoded") {
            Some(Kind::UrlEncoded)
        } else if ct.starts_with("multipart/form-data") {
            Some(Kind::Multipart)
        } else {
            None
        }
    }
}

/// Limits that bound a processor in time and memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes inspected; the rest of the body streams past uninspected.
    pub inspect_bytes: usize,
    pub max_args: usize,
    pub max_json_depth: usize,
}

/// Incremental parser: fed the body chunk by chunk as it streams.
pub trait Processor: Send {
    fn feed(&mut self, chunk: &[u8]);
    fn finish(self: Box<Self>) -> Parsed;
}

/// Creates a processor. `content_type` is the full header (multipart needs its boundary).
pub fn processor(kind: Kind, content_type: &str, limits: Limits) -> Box<dyn Processor> {
    let _ = (content_type, limits);
    match kind {
        Kind::UrlEncoded | Kind::Multipart | Kind::Json | Kind::Xml => Box::new(Unparsed),
    }
}

/// Placeholder until each processor exists: reports the body as unparsed.
#[derive(Default)]
struct Unparsed;

impl Processor for Unparsed {
    fn feed(&mut self, _chunk: &[u8]) {}
    fn finish(self: Box<Self>) -> Parsed {
        Parsed {
            error: Some("body processor not implemented".into()),
            ..Parsed::default()
        }
    }
}
