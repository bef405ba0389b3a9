//! The sandbox's IMAP server: plaintext IMAP4rev1 on 127.0.0.1 over the
//! [`MailStore`], with IDLE, UIDPLUS and MOVE — the subset async-imap and the
//! inbox watcher (src/inbox/imap.rs) use: LOGIN, SELECT/EXAMINE, UID SEARCH
//! (UID ranges, SINCE, HEADER, TEXT, flags, ...), UID FETCH of sizes, flags,
//! whole messages, headers and header fields, UID STORE, UID EXPUNGE, UID
//! MOVE/COPY, IDLE with an immediate `* N EXISTS`, plus CREATE, LIST,
//! STATUS, APPEND and friends. Each session keeps its own view of the
//! selected folder's UIDs so sequence numbers stay consistent while other
//! sessions and the SMTP side change the folder. Faults (dropped connections,
//! refused logins, slow responses) are switched through [`ImapFaults`].

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};

use super::conn::{contains_ignore_case, trim_eol, Conn, End, Line, ServerCore, Signal};
use super::store::{folder_name, MailStore, StoreError, StoredMessage};

/// How the IMAP server behaves.
#[derive(Clone, Debug)]
pub struct ImapOptions {
    pub max_sessions: usize,
    /// Longest command line, terminator included (literals not counted).
    pub max_line_len: usize,
    /// Largest literal a client may send (APPEND, or a string in any command).
    pub max_literal: usize,
    /// A session with no traffic for this long (IDLE included) is closed.
    pub timeout: Duration,
}

impl Default for ImapOptions {
    fn default() -> Self {
        ImapOptions {
            max_sessions: 32,
            max_line_len: 8192,
            max_literal: 10 * 1024 * 1024,
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug, Default)]
struct FaultState {
    refuse_logins: bool,
    delay: Duration,
    hide_idle: bool,
    silent_idle: bool,
}

/// Run-time fault switches; clones control the same server.
#[derive(Clone, Debug, Default)]
pub struct ImapFaults(Arc<Mutex<FaultState>>);

impl ImapFaults {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// LOGIN answers `NO [AUTHENTICATIONFAILED]` whatever the password.
    pub fn refuse_logins(&self, refuse: bool) {
        self.lock().refuse_logins = refuse;
    }
    /// Waits this long before every tagged response and the greeting.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }
    /// Leaves IDLE out of CAPABILITY, so clients fall back to polling.
    pub fn hide_idle(&self, hide: bool) {
        self.lock().hide_idle = hide;
    }
    /// Advertises IDLE but never announces new mail during it (as Courier's
    /// default and Cyrus without idled do): clients see mail only when they ask.
    pub fn silent_idle(&self, silent: bool) {
        self.lock().silent_idle = silent;
    }
    pub fn clear(&self) {
        *self.lock() = FaultState::default();
    }
}

/// A running IMAP server; dropping it stops it too (without waiting).
pub struct ImapServer {
    core: ServerCore,
    faults: ImapFaults,
}

struct Shared {
    store: MailStore,
    options: ImapOptions,
    faults: ImapFaults,
}

impl ImapServer {
    /// Binds 127.0.0.1 on an ephemeral port and starts accepting.
    pub async fn start(store: MailStore, options: ImapOptions) -> io::Result<ImapServer> {
        let faults = ImapFaults::default();
        let shared = Arc::new(Shared {
            store,
            options,
            faults: faults.clone(),
        });
        let max = shared.options.max_sessions;
        let core = ServerCore::start(max, b"* BYE Too many connections\r\n", move |tcp, rx| {
            session(Arc::clone(&shared), tcp, rx)
        })
        .await?;
        Ok(ImapServer { core, faults })
    }

    pub fn addr(&self) -> SocketAddr {
        self.core.addr()
    }

    pub fn port(&self) -> u16 {
        self.core.addr().port()
    }

    pub fn faults(&self) -> &ImapFaults {
        &self.faults
    }

    /// Resets every open connection now (mid-IDLE included); clients may reconnect.
    pub fn drop_connections(&self) {
        self.core.kick_all();
    }

    /// Stops accepting, ends every session and waits for them.
    pub async fn shutdown(self) {
        self.core.shutdown().await;
    }
}

async fn session(shared: Arc<Shared>, tcp: TcpStream, signals: watch::Receiver<Signal>) {
    let mut conn = Conn::new(
        tcp,
        signals,
        shared.options.max_line_len.max(256),
        shared.options.timeout,
    );
    let mut s = Session {
        shared: &shared,
        user: None,
        sel: None,
    };
    if let Err(end) = s.run(&mut conn).await {
        conn.finish(&end);
    }
}

// ---------------------------------------------------------------------------
// Command syntax

/// One element of a command: an atom (which may carry a `[...]` section with
/// spaces, as in `BODY.PEEK[HEADER.FIELDS (SUBJECT)]`), a quoted string or
/// literal, or a parenthesised list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Atom(String),
    Str(Vec<u8>),
    List(Vec<Tok>),
}

impl Tok {
    fn astring(&self) -> Option<String> {
        match self {
            Tok::Atom(a) => Some(a.clone()),
            Tok::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            Tok::List(_) => None,
        }
    }
    fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Tok::Atom(a) => Some(a.as_bytes().to_vec()),
            Tok::Str(s) => Some(s.clone()),
            Tok::List(_) => None,
        }
    }
    fn atom(&self) -> Option<&str> {
        match self {
            Tok::Atom(a) => Some(a),
            _ => None,
        }
    }
}

/// Hostile nesting is refused rather than recursed into.
const MAX_DEPTH: usize = 8;
const MAX_LITERALS_PER_COMMAND: usize = 8;

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

fn tokenize(s: &[u8]) -> Result<Vec<Tok>, &'static str> {
    Lexer { s, pos: 0 }.items(0, false)
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn items(&mut self, depth: usize, in_list: bool) -> Result<Vec<Tok>, &'static str> {
        let mut out = Vec::new();
        loop {
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            match self.peek() {
                None if in_list => return Err("unclosed list"),
                None => return Ok(out),
                Some(b')') if in_list => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b')') => return Err("unexpected )"),
                Some(b'(') => {
                    if depth >= MAX_DEPTH {
                        return Err("lists nested too deep");
                    }
                    self.pos += 1;
                    out.push(Tok::List(self.items(depth + 1, true)?));
                }
                Some(b'"') => out.push(Tok::Str(self.quoted()?)),
                Some(b'{') => out.push(Tok::Str(self.literal()?)),
                Some(b'\r' | b'\n' | 0) => return Err("unexpected control character"),
                Some(_) => out.push(Tok::Atom(self.atom()?)),
            }
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>, &'static str> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek().ok_or("unterminated string")?;
            self.pos += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => {
                    let e = self.peek().ok_or("unterminated string")?;
                    self.pos += 1;
                    out.push(e);
                }
                b'\r' | b'\n' => return Err("line break in string"),
                c => out.push(c),
            }
        }
    }

    /// `{n}` or `{n+}`, CRLF, then n bytes (already read in by the session).
    fn literal(&mut self) -> Result<Vec<u8>, &'static str> {
        let rest = &self.s[self.pos..];
        let close = rest.iter().position(|&b| b == b'}').ok_or("bad literal")?;
        let inner = &rest[1..close];
        let digits = inner.strip_suffix(b"+").unwrap_or(inner);
        let n: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or("bad literal")?;
        let after = &rest[close + 1..];
        let skip = if after.starts_with(b"\r\n") {
            2
        } else if after.starts_with(b"\n") {
            1
        } else {
            return Err("literal not at end of line");
        };
        let start = self.pos + close + 1 + skip;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.s.len())
            .ok_or("short literal")?;
        self.pos = end;
        Ok(self.s[start..end].to_vec())
    }

    fn atom(&mut self) -> Result<String, &'static str> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'(' | b')' | b'"' | b'\r' | b'\n' | 0 => break,
                b'[' => {
                    let close = self.s[self.pos..].iter().position(|&b| b == b']').ok_or("unclosed [")?;
                    self.pos += close + 1;
                }
                _ => self.pos += 1,
            }
        }
        if self.pos == start {
            return Err("empty atom");
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }
}

/// The `{n}`/`{n+}` at the end of a command line, if any: (n, non-synchronizing).
fn literal_suffix(line: &[u8]) -> Option<(usize, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let spec = &inner[open + 1..];
    let (digits, nonsync) = match spec.strip_suffix(b"+") {
        Some(d) => (d, true),
        None => (spec, false),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Absurd sizes parse as "too large" rather than as no literal.
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(usize::MAX);
    Some((n, nonsync))
}

fn first_word(bytes: &[u8]) -> String {
    let w = bytes.split(|&b| b == b' ').next().unwrap_or(b"");
    if !w.is_empty() && w.len() <= 64 && w.iter().all(|&b| b.is_ascii_graphic() && b != b'+' && b != b'*') {
        String::from_utf8_lossy(w).into_owned()
    } else {
        "*".to_string()
    }
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty() && t.len() <= 64 && t.bytes().all(|b| b.is_ascii_graphic() && !b"+*%(){\"\\".contains(&b))
}

/// A sequence or UID set; `*` is resolved at use.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SeqSet(Vec<(Option<u32>, Option<u32>)>);

const MAX_SET_PARTS: usize = 10_000;

impl SeqSet {
    fn parse(s: &str) -> Option<SeqSet> {
        let num = |p: &str| -> Option<Option<u32>> {
            if p == "*" {
                Some(None)
            } else {
                p.parse::<u32>().ok().filter(|&n| n > 0).map(Some)
            }
        };
        let mut parts = Vec::new();
        for part in s.split(',') {
            if parts.len() >= MAX_SET_PARTS {
                return None;
            }
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(part)?;
                    (n, n)
                }
            };
            parts.push((a, b));
        }
        Some(SeqSet(parts))
    }

    /// Whether `n` is in the set, `*` standing for `star`.
    fn contains(&self, n: u32, star: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let (a, b) = (a.unwrap_or(star), b.unwrap_or(star));
            a.min(b) <= n && n <= a.max(b)
        })
    }
}

/// `1:3,5` from sorted-or-not UIDs, for COPYUID.
fn compact_set(uids: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let mut j = i;
        while j + 1 < uids.len() && uids[j + 1] == uids[j].wrapping_add(1) {
            j += 1;
        }
        out.push(if i == j {
            uids[i].to_string()
        } else {
            format!("{}:{}", uids[i], uids[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// Quoted string with `"` and `\` escaped; control characters dropped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const SYSTEM_FLAGS: [&str; 5] = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];

/// System flags in canonical spelling; `None` for `\Recent` (server-managed)
/// and for anything that is not a valid flag.
fn normalize_flag(f: &str) -> Option<String> {
    if let Some(sys) = SYSTEM_FLAGS.iter().find(|s| s.eq_ignore_ascii_case(f)) {
        return Some(sys.to_string());
    }
    if f.starts_with('\\') || f.is_empty() || f.len() > 100 {
        return None;
    }
    f.bytes()
        .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
        .then(|| f.to_string())
}

fn flag_list(flags: &[String]) -> String {
    format!("({})", flags.join(" "))
}

fn has_flag(flags: &[String], f: &str) -> bool {
    flags.iter().any(|x| x.eq_ignore_ascii_case(f))
}

// ---------------------------------------------------------------------------
// Message parts

/// The header (with its blank line) and the body.
fn split_message(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with(b"\r\n\r\n") {
            return raw.split_at(i + 4);
        }
        if raw[i..].starts_with(b"\n\n") {
            return raw.split_at(i + 2);
        }
        i += 1;
    }
    (raw, &[])
}

/// The header's fields, each as (name, whole field with its continuation lines).
fn header_fields(header: &[u8]) -> Vec<(String, &[u8])> {
    let mut fields: Vec<(String, usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < header.len() {
        let end = header[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header.len(), |i| pos + i + 1);
        let line = &header[pos..end];
        if trim_eol(line).is_empty() {
            break;
        }
        match (line[0], fields.last_mut()) {
            (b' ' | b'\t', Some(last)) => last.2 = end,
            _ => {
                let name = line.split(|&b| b == b':').next().unwrap_or(b"");
                fields.push((String::from_utf8_lossy(name).trim().to_string(), pos, end));
            }
        }
        pos = end;
    }
    fields.into_iter().map(|(name, a, b)| (name, &header[a..b])).collect()
}

fn select_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, field) in header_fields(header) {
        if names.iter().any(|n| n.eq_ignore_ascii_case(&name)) != not {
            out.extend_from_slice(field);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

// ---------------------------------------------------------------------------
// FETCH items

#[derive(Clone, Debug, PartialEq, Eq)]
enum Section {
    Full,
    Header,
    Text,
    Fields { not: bool, names: Vec<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Uid,
    Flags,
    Size,
    InternalDate,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    Body {
        peek: bool,
        section: Section,
        partial: Option<(usize, usize)>,
    },
}

impl Item {
    fn sets_seen(&self) -> bool {
        matches!(self, Item::Rfc822 | Item::Rfc822Text | Item::Body { peek: false, .. })
    }
}

fn parse_items(args: &[Tok]) -> Result<Vec<Item>, String> {
    let atoms: Vec<&Tok> = match args {
        [Tok::List(items)] => items.iter().collect(),
        [one @ Tok::Atom(_)] => vec![one],
        _ => return Err("expected fetch items".into()),
    };
    let mut out = Vec::new();
    for t in atoms {
        let a = t.atom().ok_or("fetch items must be atoms")?;
        match a.to_ascii_uppercase().as_str() {
            "FAST" => out.extend([Item::Flags, Item::InternalDate, Item::Size]),
            "ALL" | "FULL" | "ENVELOPE" | "BODY" | "BODYSTRUCTURE" => {
                return Err(format!("fetch item {a} is not supported by the sandbox"))
            }
            _ => out.push(parse_item(a)?),
        }
    }
    if out.is_empty() {
        return Err("no fetch items".into());
    }
    Ok(out)
}

fn parse_item(a: &str) -> Result<Item, String> {
    let upper = a.to_ascii_uppercase();
    Ok(match upper.as_str() {
        "UID" => Item::Uid,
        "FLAGS" => Item::Flags,
        "RFC822.SIZE" => Item::Size,
        "INTERNALDATE" => Item::InternalDate,
        "RFC822" => Item::Rfc822,
        "RFC822.HEADER" => Item::Rfc822Header,
        "RFC822.TEXT" => Item::Rfc822Text,
        _ => {
            let (peek, rest) = if let Some(r) = upper.strip_prefix("BODY.PEEK[") {
                (true, r)
            } else if let Some(r) = upper.strip_prefix("BODY[") {
                (false, r)
            } else {
                return Err(format!("unknown fetch item {a}"));
            };
            let close = rest.find(']').ok_or_else(|| format!("bad section in {a}"))?;
            let section = parse_section(rest[..close].trim()).ok_or_else(|| format!("unsupported section in {a}"))?;
            let after = &rest[close + 1..];
            let partial = if after.is_empty() {
                None
            } else {
                let inner = after
                    .strip_prefix('<')
                    .and_then(|s| s.strip_suffix('>'))
                    .ok_or_else(|| format!("bad partial in {a}"))?;
                let (o, n) = inner.split_once('.').ok_or_else(|| format!("bad partial in {a}"))?;
                match (o.parse(), n.parse()) {
                    (Ok(o), Ok(n)) => Some((o, n)),
                    _ => return Err(format!("bad partial in {a}")),
                }
            };
            Item::Body { peek, section, partial }
        }
    })
}

fn parse_section(s: &str) -> Option<Section> {
    let fields = |rest: &str, not: bool| -> Option<Section> {
        let list = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
        let names: Vec<String> = list
            .split_whitespace()
            .map(|n| n.trim_matches('"').to_string())
            .filter(|n| !n.is_empty())
            .collect();
        (!names.is_empty()).then_some(Section::Fields { not, names })
    };
    match s {
        "" => Some(Section::Full),
        "HEADER" => Some(Section::Header),
        "TEXT" => Some(Section::Text),
        _ => {
            if let Some(rest) = s.strip_prefix("HEADER.FIELDS.NOT") {
                fields(rest, true)
            } else if let Some(rest) = s.strip_prefix("HEADER.FIELDS") {
                fields(rest, false)
            } else {
                None
            }
        }
    }
}

fn section_label(section: &Section) -> String {
    match section {
        Section::Full => String::new(),
        Section::Header => "HEADER".into(),
        Section::Text => "TEXT".into(),
        Section::Fields { not, names } => {
            format!("HEADER.FIELDS{} ({})", if *not { ".NOT" } else { "" }, names.join(" "))
        }
    }
}

fn internal_date(d: &DateTime<Utc>) -> String {
    d.format("%d-%b-%Y %H:%M:%S +0000").to_string()
}

fn push_literal(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
}

/// Appends one FETCH response's attributes for `m`.
fn render_items(out: &mut Vec<u8>, items: &[Item], m: &StoredMessage) {
    let (header, text) = split_message(&m.raw);
    let mut first = true;
    for item in items {
        if !first {
            out.push(b' ');
        }
        first = false;
        match item {
            Item::Uid => out.extend_from_slice(format!("UID {}", m.uid).as_bytes()),
            Item::Flags => out.extend_from_slice(format!("FLAGS {}", flag_list(&m.flags)).as_bytes()),
            Item::Size => out.extend_from_slice(format!("RFC822.SIZE {}", m.raw.len()).as_bytes()),
            Item::InternalDate => {
                out.extend_from_slice(format!("INTERNALDATE \"{}\"", internal_date(&m.internal_date)).as_bytes())
            }
            Item::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                push_literal(out, &m.raw);
            }
            Item::Rfc822Header => {
                out.extend_from_slice(b"RFC822.HEADER ");
                push_literal(out, header);
            }
            Item::Rfc822Text => {
                out.extend_from_slice(b"RFC822.TEXT ");
                push_literal(out, text);
            }
            Item::Body { section, partial, .. } => {
                let selected: Vec<u8>;
                let data: &[u8] = match section {
                    Section::Full => &m.raw,
                    Section::Header => header,
                    Section::Text => text,
                    Section::Fields { not, names } => {
                        selected = select_fields(header, names, *not);
                        &selected
                    }
                };
                out.extend_from_slice(format!("BODY[{}]", section_label(section)).as_bytes());
                let data = match partial {
                    Some((o, n)) => {
                        out.extend_from_slice(format!("<{o}>").as_bytes());
                        let start = (*o).min(data.len());
                        &data[start..start.saturating_add(*n).min(data.len())]
                    }
                    None => data,
                };
                out.push(b' ');
                push_literal(out, data);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// SEARCH

#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    All,
    Seq(SeqSet),
    Uid(SeqSet),
    Since(NaiveDate),
    Before(NaiveDate),
    On(NaiveDate),
    Header(String, Vec<u8>),
    Body(Vec<u8>),
    Text(Vec<u8>),
    Flag(String, bool),
    Larger(usize),
    Smaller(usize),
    Not(Box<Key>),
    Or(Box<Key>, Box<Key>),
    And(Vec<Key>),
}

fn parse_date(t: Option<&Tok>) -> Result<NaiveDate, String> {
    let s = t.and_then(Tok::astring).ok_or("missing date")?;
    NaiveDate::parse_from_str(&s, "%d-%b-%Y").map_err(|_| format!("bad date {s:?}"))
}

fn parse_search(args: &[Tok]) -> Result<Key, String> {
    let mut it = args.iter();
    let mut keys = Vec::new();
    let mut first = true;
    while let Some(t) = it.next() {
        if first && t.atom().is_some_and(|a| a.eq_ignore_ascii_case("CHARSET")) {
            let cs = it.next().and_then(Tok::astring).ok_or("missing charset")?;
            if !(cs.eq_ignore_ascii_case("UTF-8") || cs.eq_ignore_ascii_case("US-ASCII")) {
                return Err(format!("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset {cs}"));
            }
            first = false;
            continue;
        }
        first = false;
        keys.push(parse_key(t, &mut it, 0)?);
    }
    if keys.is_empty() {
        return Err("missing search criteria".into());
    }
    Ok(Key::And(keys))
}

fn parse_key<'a>(t: &'a Tok, it: &mut impl Iterator<Item = &'a Tok>, depth: usize) -> Result<Key, String> {
    if depth > MAX_DEPTH * 4 {
        return Err("search nested too deep".into());
    }
    let a = match t {
        Tok::List(items) => {
            let mut inner = items.iter();
            let mut keys = Vec::new();
            while let Some(t) = inner.next() {
                keys.push(parse_key(t, &mut inner, depth + 1)?);
            }
            return Ok(Key::And(keys));
        }
        Tok::Str(_) => return Err("unexpected string in search".into()),
        Tok::Atom(a) => a,
    };
    let mut string = |what: &str| {
        it.next()
            .and_then(Tok::bytes)
            .ok_or(format!("{what} needs an argument"))
    };
    let flag = |f: &str, on: bool| Ok(Key::Flag(f.to_string(), on));
    match a.to_ascii_uppercase().as_str() {
        "ALL" | "OLD" => Ok(Key::All),
        "NEW" | "RECENT" => Ok(Key::Not(Box::new(Key::All))), // \Recent is not kept
        "UID" => {
            let s = string("UID")?;
            SeqSet::parse(&String::from_utf8_lossy(&s))
                .map(Key::Uid)
                .ok_or("bad UID set".into())
        }
        "SINCE" | "SENTSINCE" => parse_date(it.next()).map(Key::Since),
        "BEFORE" | "SENTBEFORE" => parse_date(it.next()).map(Key::Before),
        "ON" | "SENTON" => parse_date(it.next()).map(Key::On),
        "HEADER" => {
            let name = String::from_utf8_lossy(&string("HEADER")?).into_owned();
            Ok(Key::Header(name, string("HEADER")?))
        }
        h @ ("SUBJECT" | "FROM" | "TO" | "CC" | "BCC") => Ok(Key::Header(h.to_string(), string(h)?)),
        "BODY" => Ok(Key::Body(string("BODY")?)),
        "TEXT" => Ok(Key::Text(string("TEXT")?)),
        "SEEN" => flag("\\Seen", true),
        "UNSEEN" => flag("\\Seen", false),
        "ANSWERED" => flag("\\Answered", true),
        "UNANSWERED" => flag("\\Answered", false),
        "DELETED" => flag("\\Deleted", true),
        "UNDELETED" => flag("\\Deleted", false),
        "FLAGGED" => flag("\\Flagged", true),
        "UNFLAGGED" => flag("\\Flagged", false),
        "DRAFT" => flag("\\Draft", true),
        "UNDRAFT" => flag("\\Draft", false),
        k @ ("KEYWORD" | "UNKEYWORD") => {
            let f = String::from_utf8_lossy(&string(k)?).into_owned();
            Ok(Key::Flag(f, k == "KEYWORD"))
        }
        k @ ("LARGER" | "SMALLER") => {
            let n: usize = String::from_utf8_lossy(&string(k)?)
                .parse()
                .map_err(|_| format!("{k} needs a number"))?;
            Ok(if k == "LARGER" { Key::Larger(n) } else { Key::Smaller(n) })
        }
        "NOT" => {
            let t = it.next().ok_or("NOT needs a key")?;
            Ok(Key::Not(Box::new(parse_key(t, it, depth + 1)?)))
        }
        "OR" => {
            let t1 = it.next().ok_or("OR needs two keys")?;
            let k1 = parse_key(t1, it, depth + 1)?;
            let t2 = it.next().ok_or("OR needs two keys")?;
            let k2 = parse_key(t2, it, depth + 1)?;
            Ok(Key::Or(Box::new(k1), Box::new(k2)))
        }
        _ => SeqSet::parse(a).map(Key::Seq).ok_or(format!("unknown search key {a}")),
    }
}

/// What `*` and sequence numbers mean for one message under test.
struct Position {
    seq: u32,
    max_seq: u32,
    max_uid: u32,
}

fn matches(key: &Key, m: &StoredMessage, p: &Position) -> bool {
    let day = m.internal_date.date_naive();
    match key {
        Key::All => true,
        Key::Seq(s) => s.contains(p.seq, p.max_seq),
        Key::Uid(s) => s.contains(m.uid, p.max_uid),
        Key::Since(d) => day >= *d,
        Key::Before(d) => day < *d,
        Key::On(d) => day == *d,
        Key::Header(name, needle) => {
            let (header, _) = split_message(&m.raw);
            header_fields(header).iter().any(|(n, field)| {
                n.eq_ignore_ascii_case(name) && {
                    let value = field.splitn(2, |&b| b == b':').nth(1).unwrap_or(b"");
                    contains_ignore_case(value, needle)
                }
            })
        }
        Key::Body(needle) => contains_ignore_case(split_message(&m.raw).1, needle),
        Key::Text(needle) => contains_ignore_case(&m.raw, needle),
        Key::Flag(f, on) => has_flag(&m.flags, f) == *on,
        Key::Larger(n) => m.raw.len() > *n,
        Key::Smaller(n) => m.raw.len() < *n,
        Key::Not(k) => !matches(k, m, p),
        Key::Or(a, b) => matches(a, m, p) || matches(b, m, p),
        Key::And(ks) => ks.iter().all(|k| matches(k, m, p)),
    }
}

// ---------------------------------------------------------------------------
// Sessions

struct Selected {
    folder: String,
    read_only: bool,
    uid_validity: u32,
    /// The UIDs this session has been told of, in sequence-number order.
    view: Vec<u32>,
}

struct Session<'a> {
    shared: &'a Shared,
    user: Option<String>,
    sel: Option<Selected>,
}

/// A tagged completion.
struct Reply {
    status: &'static str,
    text: String,
}

fn ok(text: impl Into<String>) -> Reply {
    Reply {
        status: "OK",
        text: text.into(),
    }
}
fn no(text: impl Into<String>) -> Reply {
    Reply {
        status: "NO",
        text: text.into(),
    }
}
fn bad(text: impl Into<String>) -> Reply {
    Reply {
        status: "BAD",
        text: text.into(),
    }
}

fn store_no(e: &StoreError) -> Reply {
    match e {
        StoreError::NoSuchFolder(_) => no("[TRYCREATE] Mailbox doesn't exist"),
        e => no(e.to_string()),
    }
}

enum Command {
    Bytes(Vec<u8>),
    TooLong,
    LiteralTooLarge { tag: String, nonsync: bool },
}

enum Flow {
    Continue,
    Logout,
}

/// Untagged output is sent in pieces of about this size, so a large FETCH
/// never sits in memory whole.
const FLUSH_AT: usize = 256 * 1024;

impl Session<'_> {
    fn store(&self) -> &MailStore {
        &self.shared.store
    }

    fn capabilities(&self) -> String {
        let idle = if self.shared.faults.lock().hide_idle {
            ""
        } else {
            " IDLE"
        };
        format!("IMAP4rev1{idle} UIDPLUS MOVE UNSELECT AUTH=XOAUTH2 SASL-IR")
    }

    async fn delay(&self) {
        let d = self.shared.faults.lock().delay;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    async fn run(&mut self, conn: &mut Conn) -> Result<(), End> {
        self.delay().await;
        conn.write(b"* OK postcanary sandbox IMAP4rev1 ready\r\n").await?;
        loop {
            let bytes = match self.read_command(conn).await? {
                Command::Bytes(b) => b,
                Command::TooLong => {
                    conn.write(b"* BAD Command line too long\r\n").await?;
                    continue;
                }
                Command::LiteralTooLarge { tag, nonsync } => {
                    conn.write(format!("{tag} BAD Literal too large\r\n").as_bytes())
                        .await?;
                    if nonsync {
                        // Its bytes are on their way already; we cannot tell them from commands.
                        conn.write(b"* BYE Literal too large\r\n").await?;
                        return Ok(());
                    }
                    continue;
                }
            };
            let toks = match tokenize(&bytes) {
                Ok(t) => t,
                Err(e) => {
                    conn.write(format!("{} BAD {e}\r\n", first_word(&bytes)).as_bytes())
                        .await?;
                    continue;
                }
            };
            let tag = match toks.first() {
                Some(Tok::Atom(t)) if valid_tag(t) => t.clone(),
                _ => {
                    conn.write(b"* BAD Missing or invalid tag\r\n").await?;
                    continue;
                }
            };
            let Some(Tok::Atom(cmd)) = toks.get(1) else {
                conn.write(format!("{tag} BAD Missing command\r\n").as_bytes()).await?;
                continue;
            };
            let cmd = cmd.to_ascii_uppercase();
            if let Flow::Logout = self.dispatch(conn, &tag, &cmd, &toks[2..]).await? {
                return Ok(());
            }
        }
    }

    /// Reads one command, literals included, within the configured limits.
    async fn read_command(&self, conn: &mut Conn) -> Result<Command, End> {
        let max_literal = self.shared.options.max_literal;
        let max_total = self.shared.options.max_line_len.saturating_add(max_literal);
        let mut buf: Vec<u8> = Vec::new();
        let mut literals = 0;
        loop {
            let line = match conn.read_line().await? {
                Line::TooLong => return Ok(Command::TooLong),
                Line::Full(l) => l,
            };
            let body = trim_eol(&line);
            if buf.len() + body.len() > max_total {
                return Ok(Command::TooLong);
            }
            buf.extend_from_slice(body);
            let Some((n, nonsync)) = literal_suffix(body) else {
                return Ok(Command::Bytes(buf));
            };
            literals += 1;
            if n > max_literal || buf.len().saturating_add(n) > max_total || literals > MAX_LITERALS_PER_COMMAND {
                return Ok(Command::LiteralTooLarge {
                    tag: first_word(&buf),
                    nonsync,
                });
            }
            buf.extend_from_slice(b"\r\n");
            if !nonsync {
                conn.write(b"+ Ready for literal data\r\n").await?;
            }
            conn.read_exact(n, &mut buf).await?;
        }
    }

    async fn dispatch(&mut self, conn: &mut Conn, tag: &str, cmd: &str, args: &[Tok]) -> Result<Flow, End> {
        let mut out = Vec::new();
        let (cmd, uid) = match cmd {
            "UID" => match args.first().and_then(Tok::atom) {
                Some(sub) => (sub.to_ascii_uppercase(), true),
                None => return self.finish(conn, out, tag, bad("UID needs a command"), true).await,
            },
            c => (c.to_string(), false),
        };
        let args = if uid { &args[1..] } else { args };
        let authed = self.user.is_some();
        let selected = self.sel.is_some();
        // Sequence numbers in untagged EXPUNGEs would confuse the results of
        // these commands (RFC 3501 7.4.1), so expunges wait until later.
        let allow_expunge = uid || !matches!(cmd.as_str(), "FETCH" | "STORE" | "SEARCH" | "COPY" | "MOVE");
        let reply = match cmd.as_str() {
            "CAPABILITY" if !uid => {
                out.extend_from_slice(format!("* CAPABILITY {}\r\n", self.capabilities()).as_bytes());
                ok("CAPABILITY completed")
            }
            "NOOP" | "CHECK" if !uid => ok(format!("{cmd} completed")),
            "LOGOUT" if !uid => {
                out.extend_from_slice(b"* BYE postcanary sandbox logging out\r\n");
                self.delay().await;
                out.extend_from_slice(format!("{tag} OK LOGOUT completed\r\n").as_bytes());
                conn.write(&out).await?;
                return Ok(Flow::Logout);
            }
            "STARTTLS" if !uid => bad("TLS is not available in the sandbox"),
            "AUTHENTICATE" if !uid => self.authenticate(conn, args).await?,
            "LOGIN" if !uid => self.login(args),
            "IDLE" if !uid && authed => return self.idle(conn, tag).await,
            _ if !authed => bad(format!("{cmd}: not allowed before LOGIN")),
            "SELECT" | "EXAMINE" if !uid => self.select(&mut out, args, cmd == "EXAMINE"),
            "CREATE" if !uid => self.create(args),
            "DELETE" if !uid => self.delete(args),
            "LIST" | "LSUB" if !uid => self.list(&mut out, &cmd, args),
            "STATUS" if !uid => self.status(&mut out, args),
            "APPEND" if !uid => self.append(args),
            _ if !selected => bad(format!("{cmd}: no mailbox selected")),
            "CLOSE" | "UNSELECT" if !uid => {
                if cmd == "CLOSE" {
                    // CLOSE expunges silently (RFC 3501 6.4.2).
                    let _ = self.expunge(&mut Vec::new(), None);
                }
                self.sel = None;
                ok(format!("{cmd} completed"))
            }
            "EXPUNGE" if !uid => self.expunge(&mut out, None),
            "EXPUNGE" => match args.first().and_then(Tok::atom).and_then(SeqSet::parse) {
                Some(set) => self.expunge(&mut out, Some(set)),
                None => bad("UID EXPUNGE needs a UID set"),
            },
            "FETCH" => match self.fetch(conn, &mut out, args, uid).await? {
                Some(r) => r,
                None => return Ok(Flow::Logout),
            },
            "SEARCH" => self.search(&mut out, args, uid),
            "STORE" => self.store_flags(&mut out, args, uid),
            "COPY" | "MOVE" => self.copy(&mut out, args, uid, cmd == "MOVE"),
            _ => bad(format!("Unknown command {}{cmd}", if uid { "UID " } else { "" })),
        };
        self.finish(conn, out, tag, reply, allow_expunge).await
    }

    /// Adds pending mailbox updates, then the tagged reply, and sends it all.
    async fn finish(
        &mut self,
        conn: &mut Conn,
        mut out: Vec<u8>,
        tag: &str,
        reply: Reply,
        allow_expunge: bool,
    ) -> Result<Flow, End> {
        if !self.sync(&mut out, allow_expunge) {
            out.extend_from_slice(b"* BYE Mailbox changed under this session\r\n");
            conn.write(&out).await?;
            return Ok(Flow::Logout);
        }
        self.delay().await;
        out.extend_from_slice(format!("{tag} {} {}\r\n", reply.status, reply.text).as_bytes());
        conn.write(&out).await?;
        Ok(Flow::Continue)
    }

    /// Brings the session's view up to date with the store, announcing new
    /// messages (and, where allowed, expunged ones). False if the folder is
    /// gone or its UIDVALIDITY changed: the session cannot go on.
    fn sync(&mut self, out: &mut Vec<u8>, allow_expunge: bool) -> bool {
        let (Some(user), Some(sel)) = (self.user.as_deref(), self.sel.as_mut()) else {
            return true;
        };
        let current = self.shared.store.with(|i| {
            i.folder(user, &sel.folder)
                .ok()
                .map(|f| (f.uid_validity, f.messages.iter().map(|m| m.uid).collect::<Vec<_>>()))
        });
        let Some((validity, uids)) = current else {
            return false;
        };
        if validity != sel.uid_validity {
            return false;
        }
        if allow_expunge {
            let mut i = 0;
            while i < sel.view.len() {
                if uids.binary_search(&sel.view[i]).is_err() {
                    out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                    sel.view.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        let max = sel.view.last().copied().unwrap_or(0);
        let before = sel.view.len();
        sel.view.extend(uids.iter().copied().filter(|&u| u > max));
        if sel.view.len() != before {
            out.extend_from_slice(format!("* {} EXISTS\r\n", sel.view.len()).as_bytes());
        }
        true
    }

    fn login(&mut self, args: &[Tok]) -> Reply {
        if self.user.is_some() {
            return bad("Already logged in");
        }
        let (Some(user), Some(pass), 2) = (
            args.first().and_then(Tok::astring),
            args.get(1).and_then(Tok::astring),
            args.len(),
        ) else {
            return bad("LOGIN needs a user name and a password");
        };
        if self.shared.faults.lock().refuse_logins {
            return no("[AUTHENTICATIONFAILED] Authentication failed (sandbox fault)");
        }
        if !self.store().check_password(&user, &pass) {
            return no("[AUTHENTICATIONFAILED] Authentication failed");
        }
        self.user = Some(user);
        ok("LOGIN completed")
    }

    /// SASL XOAUTH2 (RFC 7628's precursor, as Exchange Online speaks it):
    /// `user=U\x01auth=Bearer T\x01\x01`, base64, as an initial response or
    /// after a `+`. The sandbox accepts the bearer token that equals the
    /// user's password, so a test decides which token is valid.
    async fn authenticate(&mut self, conn: &mut Conn, args: &[Tok]) -> Result<Reply, End> {
        if self.user.is_some() {
            return Ok(bad("Already logged in"));
        }
        let mech = args.first().and_then(Tok::astring).unwrap_or_default();
        if !mech.eq_ignore_ascii_case("XOAUTH2") {
            return Ok(no(format!("Unsupported mechanism {mech:?}; use XOAUTH2 or LOGIN")));
        }
        let response = match args.get(1).and_then(Tok::astring) {
            Some(ir) => ir,
            None => {
                conn.write(b"+ \r\n").await?;
                match conn.read_line().await? {
                    Line::Full(l) => String::from_utf8_lossy(trim_eol(&l)).into_owned(),
                    Line::TooLong => return Ok(bad("SASL response too long")),
                }
            }
        };
        use base64::Engine as _;
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(response.trim()) else {
            return Ok(bad("SASL response is not base64"));
        };
        let text = String::from_utf8_lossy(&decoded).into_owned();
        let mut user = None;
        let mut token = None;
        for part in text.split('\x01') {
            if let Some(u) = part.strip_prefix("user=") {
                user = Some(u.to_string());
            } else if let Some(t) = part.strip_prefix("auth=Bearer ") {
                token = Some(t.to_string());
            }
        }
        let (Some(user), Some(token)) = (user, token) else {
            return Ok(bad("XOAUTH2 response needs user= and auth=Bearer"));
        };
        if self.shared.faults.lock().refuse_logins || !self.store().check_password(&user, &token) {
            return Ok(no("[AUTHENTICATIONFAILED] Invalid bearer token"));
        }
        self.user = Some(user);
        Ok(ok("AUTHENTICATE completed"))
    }

    fn user(&self) -> &str {
        self.user.as_deref().unwrap_or("")
    }

    fn mailbox_arg(args: &[Tok], i: usize) -> Option<String> {
        args.get(i).and_then(Tok::astring).map(|n| folder_name(&n))
    }

    fn select(&mut self, out: &mut Vec<u8>, args: &[Tok], read_only: bool) -> Reply {
        // A failed SELECT leaves no mailbox selected (RFC 3501 6.3.1).
        self.sel = None;
        let Some(name) = Self::mailbox_arg(args, 0) else {
            return bad("SELECT needs a mailbox name");
        };
        let user = self.user().to_string();
        let info = self.store().with(|i| {
            i.folder(&user, &name).map(|f| {
                let unseen = f.messages.iter().position(|m| !m.has_flag("\\Seen"));
                (
                    f.uid_validity,
                    f.uid_next,
                    f.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
                    unseen,
                )
            })
        });
        let (uid_validity, uid_next, view, unseen) = match info {
            Ok(v) => v,
            Err(e) => return no(e.to_string()),
        };
        let flags = SYSTEM_FLAGS.join(" ");
        let mut s = format!(
            "* FLAGS ({flags})\r\n* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted\r\n* {} EXISTS\r\n* 0 RECENT\r\n",
            view.len()
        );
        if let Some(i) = unseen {
            s.push_str(&format!("* OK [UNSEEN {}] First unseen\r\n", i + 1));
        }
        s.push_str(&format!(
            "* OK [UIDVALIDITY {uid_validity}] UIDs valid\r\n* OK [UIDNEXT {uid_next}] Predicted next UID\r\n"
        ));
        out.extend_from_slice(s.as_bytes());
        self.sel = Some(Selected {
            folder: name,
            read_only,
            uid_validity,
            view,
        });
        if read_only {
            ok("[READ-ONLY] EXAMINE completed")
        } else {
            ok("[READ-WRITE] SELECT completed")
        }
    }

    fn create(&mut self, args: &[Tok]) -> Reply {
        let Some(name) = Self::mailbox_arg(args, 0) else {
            return bad("CREATE needs a mailbox name");
        };
        // A trailing delimiter only says the folder will have children.
        let name = name.trim_end_matches('/').to_string();
        match self.store().create_folder(self.user(), &name) {
            Ok(()) => ok("CREATE completed"),
            Err(e) => no(e.to_string()),
        }
    }

    fn delete(&mut self, args: &[Tok]) -> Reply {
        let Some(name) = Self::mailbox_arg(args, 0) else {
            return bad("DELETE needs a mailbox name");
        };
        if name == "INBOX" {
            return no("INBOX cannot be deleted");
        }
        let user = self.user().to_string();
        let removed = self
            .store()
            .with(|i| i.user_mut(&user).map(|u| u.folders.remove(&name).is_some()));
        match removed {
            Ok(true) => {
                self.store().notify(&user, &name);
                if self.sel.as_ref().is_some_and(|s| s.folder == name) {
                    self.sel = None;
                }
                ok("DELETE completed")
            }
            Ok(false) => no("Mailbox doesn't exist"),
            Err(e) => no(e.to_string()),
        }
    }

    fn list(&mut self, out: &mut Vec<u8>, cmd: &str, args: &[Tok]) -> Reply {
        let (Some(reference), Some(pattern)) =
            (args.first().and_then(Tok::astring), args.get(1).and_then(Tok::astring))
        else {
            return bad(format!("{cmd} needs a reference and a pattern"));
        };
        if pattern.is_empty() {
            out.extend_from_slice(format!("* {cmd} (\\Noselect) \"/\" \"\"\r\n").as_bytes());
            return ok(format!("{cmd} completed"));
        }
        let pattern = format!("{reference}{pattern}");
        // Wildcard matching backtracks; keep hostile patterns cheap.
        if pattern.len() > 256 || pattern.bytes().filter(|b| matches!(b, b'*' | b'%')).count() > 8 {
            return bad("pattern too complex");
        }
        let names = self.store().folders(self.user()).unwrap_or_default();
        for name in &names {
            let hit = wildcard_match(pattern.as_bytes(), name.as_bytes())
                || (name == "INBOX" && wildcard_match(pattern.to_ascii_uppercase().as_bytes(), b"INBOX"));
            if hit {
                let prefix = format!("{name}/");
                let children = if names.iter().any(|n| n.starts_with(&prefix)) {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                };
                out.extend_from_slice(format!("* {cmd} ({children}) \"/\" {}\r\n", quote(name)).as_bytes());
            }
        }
        ok(format!("{cmd} completed"))
    }

    fn status(&mut self, out: &mut Vec<u8>, args: &[Tok]) -> Reply {
        let (Some(name), Some(Tok::List(items))) = (Self::mailbox_arg(args, 0), args.get(1)) else {
            return bad("STATUS needs a mailbox and a list of items");
        };
        let user = self.user().to_string();
        let info = self.store().with(|i| {
            i.folder(&user, &name).map(|f| {
                (
                    f.messages.len(),
                    f.uid_next,
                    f.uid_validity,
                    f.messages.iter().filter(|m| !m.has_flag("\\Seen")).count(),
                )
            })
        });
        let (messages, uid_next, uid_validity, unseen) = match info {
            Ok(v) => v,
            Err(e) => return no(e.to_string()),
        };
        let mut parts = Vec::new();
        for item in items {
            let Some(a) = item.atom() else {
                return bad("STATUS items must be atoms");
            };
            let a = a.to_ascii_uppercase();
            let v = match a.as_str() {
                "MESSAGES" => messages as u64,
                "UIDNEXT" => u64::from(uid_next),
                "UIDVALIDITY" => u64::from(uid_validity),
                "UNSEEN" => unseen as u64,
                "RECENT" => 0,
                _ => return bad(format!("unknown STATUS item {a}")),
            };
            parts.push(format!("{a} {v}"));
        }
        out.extend_from_slice(format!("* STATUS {} ({})\r\n", quote(&name), parts.join(" ")).as_bytes());
        ok("STATUS completed")
    }

    fn append(&mut self, args: &[Tok]) -> Reply {
        let Some(name) = Self::mailbox_arg(args, 0) else {
            return bad("APPEND needs a mailbox");
        };
        let mut rest = &args[1..];
        let mut flags = Vec::new();
        if let Some((Tok::List(fl), r)) = rest.split_first() {
            for f in fl {
                match f.atom().and_then(normalize_flag) {
                    Some(f) if !has_flag(&flags, &f) => flags.push(f),
                    Some(_) => {}
                    None => return bad("invalid flag"),
                }
            }
            rest = r;
        }
        let mut date = Utc::now();
        if let [Tok::Str(d), _] = rest {
            let d = String::from_utf8_lossy(d);
            match DateTime::parse_from_str(d.trim(), "%d-%b-%Y %H:%M:%S %z") {
                Ok(parsed) => date = parsed.with_timezone(&Utc),
                Err(_) => return bad("bad date-time"),
            }
            rest = &rest[1..];
        }
        let [Tok::Str(message)] = rest else {
            return bad("APPEND needs a message literal");
        };
        let user = self.user().to_string();
        let raw: Arc<[u8]> = Arc::from(message.as_slice());
        let result = self.store().with(|i| {
            let uid = i.append(&user, &name, raw, flags, date)?;
            Ok::<_, StoreError>((i.folder(&user, &name)?.uid_validity, uid))
        });
        match result {
            Ok((validity, uid)) => {
                self.store().notify(&user, &name);
                ok(format!("[APPENDUID {validity} {uid}] APPEND completed"))
            }
            Err(e) => store_no(&e),
        }
    }

    /// The (sequence number, UID) pairs of the view that `set` names.
    fn targets(&self, set: &SeqSet, uid: bool) -> Vec<(u32, u32)> {
        let Some(sel) = &self.sel else {
            return Vec::new();
        };
        let max_uid = sel.view.last().copied().unwrap_or(0);
        let max_seq = u32::try_from(sel.view.len()).unwrap_or(u32::MAX);
        sel.view
            .iter()
            .enumerate()
            .map(|(i, &u)| (u32::try_from(i + 1).unwrap_or(u32::MAX), u))
            .filter(|&(seq, u)| {
                if uid {
                    set.contains(u, max_uid)
                } else {
                    set.contains(seq, max_seq)
                }
            })
            .collect()
    }

    /// Removes `uids` from the view, announcing each with `* n EXPUNGE`.
    fn announce_expunged(&mut self, out: &mut Vec<u8>, uids: &[u32]) {
        let Some(sel) = self.sel.as_mut() else {
            return;
        };
        for uid in uids {
            if let Some(i) = sel.view.iter().position(|u| u == uid) {
                out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                sel.view.remove(i);
            }
        }
    }

    fn expunge(&mut self, out: &mut Vec<u8>, only: Option<SeqSet>) -> Reply {
        let Some(sel) = &self.sel else {
            return bad("no mailbox selected");
        };
        if sel.read_only {
            return no("Mailbox is read-only");
        }
        let (user, folder) = (self.user().to_string(), sel.folder.clone());
        let max_uid = sel.view.last().copied().unwrap_or(0);
        let removed = self.store().with(|i| {
            let f = i.folder(&user, &folder)?;
            let doomed: Vec<u32> = f
                .messages
                .iter()
                .filter(|m| m.has_flag("\\Deleted") && only.as_ref().is_none_or(|s| s.contains(m.uid, max_uid)))
                .map(|m| m.uid)
                .collect();
            i.remove(&user, &folder, &doomed)
        });
        match removed {
            Ok(uids) => {
                if !uids.is_empty() {
                    self.store().notify(&user, &folder);
                }
                self.announce_expunged(out, &uids);
                ok("EXPUNGE completed")
            }
            Err(e) => no(e.to_string()),
        }
    }

    /// FETCH; `None` if the connection must end.
    async fn fetch(
        &mut self,
        conn: &mut Conn,
        out: &mut Vec<u8>,
        args: &[Tok],
        uid: bool,
    ) -> Result<Option<Reply>, End> {
        let Some(set) = args.first().and_then(Tok::atom).and_then(SeqSet::parse) else {
            return Ok(Some(bad("FETCH needs a sequence set")));
        };
        let mut items = match parse_items(&args[1..]) {
            Ok(i) => i,
            Err(e) => return Ok(Some(bad(e))),
        };
        if uid && !items.contains(&Item::Uid) {
            items.insert(0, Item::Uid);
        }
        let Some(sel) = &self.sel else {
            return Ok(Some(bad("no mailbox selected")));
        };
        let (user, folder, read_only) = (self.user().to_string(), sel.folder.clone(), sel.read_only);
        let sets_seen = !read_only && items.iter().any(Item::sets_seen);
        for (seq, u) in self.targets(&set, uid) {
            // Copy out under the lock (the raw bytes are shared, not copied),
            // render outside it.
            let found = self.store().with(|i| {
                let f = i.folder_mut(&user, &folder).ok()?;
                let m = f.get_mut(u)?;
                let mut changed = false;
                if sets_seen && !m.has_flag("\\Seen") {
                    m.flags.push("\\Seen".into());
                    changed = true;
                }
                Some((m.clone(), changed))
            });
            // Expunged by another session and not yet announced: skip it.
            let Some((m, changed)) = found else { continue };
            out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
            render_items(out, &items, &m);
            if changed && !items.contains(&Item::Flags) {
                out.extend_from_slice(format!(" FLAGS {}", flag_list(&m.flags)).as_bytes());
            }
            out.extend_from_slice(b")\r\n");
            if out.len() >= FLUSH_AT {
                conn.write(out).await?;
                out.clear();
            }
        }
        Ok(Some(ok(format!("{}FETCH completed", if uid { "UID " } else { "" }))))
    }

    fn search(&mut self, out: &mut Vec<u8>, args: &[Tok], uid: bool) -> Reply {
        let key = match parse_search(args) {
            Ok(k) => k,
            Err(e) => return bad(e),
        };
        let Some(sel) = &self.sel else {
            return bad("no mailbox selected");
        };
        let user = self.user().to_string();
        let max_uid = sel.view.last().copied().unwrap_or(0);
        let max_seq = u32::try_from(sel.view.len()).unwrap_or(u32::MAX);
        let hits: Vec<u32> = self.store().with(|i| {
            let Ok(f) = i.folder(&user, &sel.folder) else {
                return Vec::new();
            };
            sel.view
                .iter()
                .enumerate()
                .filter_map(|(idx, &u)| {
                    let m = f.get(u)?;
                    let seq = u32::try_from(idx + 1).unwrap_or(u32::MAX);
                    let p = Position { seq, max_seq, max_uid };
                    matches(&key, m, &p).then_some(if uid { u } else { seq })
                })
                .collect()
        });
        let mut line = String::from("* SEARCH");
        for h in hits {
            line.push(' ');
            line.push_str(&h.to_string());
        }
        line.push_str("\r\n");
        out.extend_from_slice(line.as_bytes());
        ok(format!("{}SEARCH completed", if uid { "UID " } else { "" }))
    }

    fn store_flags(&mut self, out: &mut Vec<u8>, args: &[Tok], uid: bool) -> Reply {
        let (Some(set), Some(what)) = (
            args.first().and_then(Tok::atom).and_then(SeqSet::parse),
            args.get(1).and_then(Tok::atom),
        ) else {
            return bad("STORE needs a sequence set and an item");
        };
        let what = what.to_ascii_uppercase();
        let (mode, rest) = match what.as_bytes().first() {
            Some(b'+') => ('+', &what[1..]),
            Some(b'-') => ('-', &what[1..]),
            _ => ('=', what.as_str()),
        };
        let silent = match rest {
            "FLAGS" => false,
            "FLAGS.SILENT" => true,
            _ => return bad(format!("unknown STORE item {what}")),
        };
        let flag_toks: Vec<&Tok> = match &args[2..] {
            [Tok::List(l)] => l.iter().collect(),
            toks => toks.iter().collect(),
        };
        let mut flags = Vec::new();
        for t in flag_toks {
            let Some(a) = t.atom() else {
                return bad("flags must be atoms");
            };
            if a.eq_ignore_ascii_case("\\Recent") {
                continue;
            }
            match normalize_flag(a) {
                Some(f) if !has_flag(&flags, &f) => flags.push(f),
                Some(_) => {}
                None => return bad(format!("invalid flag {a}")),
            }
        }
        let Some(sel) = &self.sel else {
            return bad("no mailbox selected");
        };
        if sel.read_only {
            return no("Mailbox is read-only");
        }
        let (user, folder) = (self.user().to_string(), sel.folder.clone());
        let targets = self.targets(&set, uid);
        let updated: Vec<(u32, u32, Vec<String>)> = self.store().with(|i| {
            let Ok(f) = i.folder_mut(&user, &folder) else {
                return Vec::new();
            };
            targets
                .iter()
                .filter_map(|&(seq, u)| {
                    let m = f.get_mut(u)?;
                    match mode {
                        '+' => {
                            for fl in &flags {
                                if !m.has_flag(fl) {
                                    m.flags.push(fl.clone());
                                }
                            }
                        }
                        '-' => m.flags.retain(|x| !has_flag(&flags, x)),
                        _ => m.flags = flags.clone(),
                    }
                    Some((seq, u, m.flags.clone()))
                })
                .collect()
        });
        if !silent {
            for (seq, u, fl) in updated {
                let uid_part = if uid { format!("UID {u} ") } else { String::new() };
                out.extend_from_slice(format!("* {seq} FETCH ({uid_part}FLAGS {})\r\n", flag_list(&fl)).as_bytes());
            }
        }
        ok(format!("{}STORE completed", if uid { "UID " } else { "" }))
    }

    fn copy(&mut self, out: &mut Vec<u8>, args: &[Tok], uid: bool, moving: bool) -> Reply {
        let cmd = if moving { "MOVE" } else { "COPY" };
        let (Some(set), Some(dest), 2) = (
            args.first().and_then(Tok::atom).and_then(SeqSet::parse),
            Self::mailbox_arg(args, 1),
            args.len(),
        ) else {
            return bad(format!("{cmd} needs a sequence set and a mailbox"));
        };
        let Some(sel) = &self.sel else {
            return bad("no mailbox selected");
        };
        if moving && sel.read_only {
            return no("Mailbox is read-only");
        }
        let (user, folder) = (self.user().to_string(), sel.folder.clone());
        let uids: Vec<u32> = self.targets(&set, uid).into_iter().map(|(_, u)| u).collect();
        // Copy and (for MOVE) remove under one lock: nobody sees it half done.
        let result = self.store().with(|i| {
            let (pairs, validity) = i.copy(&user, &folder, &uids, &dest)?;
            if moving {
                let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                i.remove(&user, &folder, &moved)?;
            }
            Ok::<_, StoreError>((pairs, validity))
        });
        let (pairs, validity) = match result {
            Ok(v) => v,
            Err(e) => return store_no(&e),
        };
        if pairs.is_empty() {
            return ok(format!("{cmd} completed (no messages)"));
        }
        self.store().notify(&user, &dest);
        let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let code = format!("[COPYUID {validity} {} {}]", compact_set(&src), compact_set(&dst));
        if moving {
            self.store().notify(&user, &folder);
            out.extend_from_slice(format!("* OK {code} Moved\r\n").as_bytes());
            self.announce_expunged(out, &src);
            ok(format!("{cmd} completed"))
        } else {
            ok(format!("{code} {cmd} completed"))
        }
    }

    /// IDLE: announces changes to the selected folder as they happen, until DONE.
    async fn idle(&mut self, conn: &mut Conn, tag: &str) -> Result<Flow, End> {
        // Subscribe before the first sync so nothing falls in between.
        let mut events = self.store().subscribe();
        let mut out = b"+ idling\r\n".to_vec();
        if !self.sync(&mut out, true) {
            out.extend_from_slice(b"* BYE Mailbox changed under this session\r\n");
            conn.write(&out).await?;
            return Ok(Flow::Logout);
        }
        conn.write(&out).await?;
        loop {
            tokio::select! {
                line = conn.read_line() => {
                    let reply = match line? {
                        Line::Full(l) if trim_eol(&l).eq_ignore_ascii_case(b"DONE") => ok("IDLE terminated"),
                        _ => bad("Expected DONE"),
                    };
                    return self.finish(conn, Vec::new(), tag, reply, true).await;
                }
                event = events.recv() => {
                    let relevant = match &event {
                        Ok(e) => Some(e.user.as_str()) == self.user.as_deref()
                            && self.sel.as_ref().is_some_and(|s| s.folder == e.folder),
                        // Lagged: something may have changed; a sync is cheap.
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => false,
                    };
                    if relevant && !self.shared.faults.lock().silent_idle {
                        let mut out = Vec::new();
                        if !self.sync(&mut out, true) {
                            out.extend_from_slice(b"* BYE Mailbox changed under this session\r\n");
                            conn.write(&out).await?;
                            return Ok(Flow::Logout);
                        }
                        if !out.is_empty() {
                            conn.write(&out).await?;
                        }
                    }
                }
            }
        }
    }
}

/// IMAP LIST matching: `*` matches anything, `%` anything but the delimiter.
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| wildcard_match(rest, &name[i..])),
        Some((b'%', rest)) => (0..=name.len())
            .take_while(|&i| i == 0 || name[i - 1] != b'/')
            .any(|i| wildcard_match(rest, &name[i..])),
        Some((&c, rest)) => name.first() == Some(&c) && wildcard_match(rest, &name[1..]),
    }
}

#[cfg(test)]
#[path = "imap_tests.rs"]
mod tests;
