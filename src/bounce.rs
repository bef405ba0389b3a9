//! Bounces, delivery status notifications and auto-replies.
//!
//! The return-path mailbox receives what remote systems say about a probe:
//! RFC 3464 DSNs, the free-text bounces of MTAs that predate it (qmail, old
//! Sendmail, Exim's classic text), and auto-replies (RFC 3834, Exchange
//! "Automatic reply", Danish "Automatisk svar"). [`parse`] turns one raw
//! message into a [`Bounce`]: what happened, to whom, why (one human line for
//! the verdict) and which probe it belongs to (tokens and the original
//! Message-ID). An ordinary mail yields `None`.
//!
//! Everything here reads hostile input: sizes are capped up front, every
//! loop is bounded by the (capped) input, and nothing indexes without a check.

use mail_parser::{MessageParser, MimeHeaders, PartType};

use crate::token::find_candidates;

/// Bytes of a message considered at all. Bounces that return a large
/// original are cut here; the report and the returned headers come first.
const MAX_INPUT: usize = 4 << 20;
/// Bytes of human-readable text searched for free-text bounce formats.
const MAX_TEXT: usize = 256 << 10;
/// Header fields read from one header block.
const MAX_FIELDS: usize = 512;
/// Characters kept of one header value.
const MAX_VALUE: usize = 4096;
const MAX_RECIPIENTS: usize = 100;
const MAX_TOKENS: usize = 32;
/// Characters of the one-line reason.
pub const MAX_REASON: usize = 300;

/// What the remote system reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BounceKind {
    /// Permanent failure: the probe will never arrive.
    Failed,
    /// Still being retried: not (yet) a failure.
    Delayed,
    /// A positive DSN: delivered to the recipient's mailbox.
    Delivered,
    /// Handed on to a system that does not send DSNs.
    Relayed,
    /// Delivered to a list or alias that expanded into more recipients.
    Expanded,
    /// An auto-responder answered: the mail reached a mailbox.
    AutoReply,
}

impl BounceKind {
    /// Whether the probe has failed for good.
    pub fn is_failure(&self) -> bool {
        matches!(self, BounceKind::Failed)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            BounceKind::Failed => "failed",
            BounceKind::Delayed => "delayed",
            BounceKind::Delivered => "delivered",
            BounceKind::Relayed => "relayed",
            BounceKind::Expanded => "expanded",
            BounceKind::AutoReply => "auto-reply",
        }
    }

    fn from_action(action: &str) -> Option<BounceKind> {
        match action {
            "failed" => Some(BounceKind::Failed),
            "delayed" => Some(BounceKind::Delayed),
            "delivered" => Some(BounceKind::Delivered),
            "relayed" => Some(BounceKind::Relayed),
            "expanded" => Some(BounceKind::Expanded),
            _ => None,
        }
    }
}

/// What the report says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// Final recipient (or, without one, the original recipient), lower-cased.
    pub address: String,
    /// `failed`, `delayed`, `delivered`, `relayed`, `expanded` or `auto-replied`.
    pub action: String,
    /// Enhanced status code, e.g. `5.1.1`.
    pub status: Option<String>,
    /// The remote's words, e.g. `smtp; 550 5.1.1 <x@y>: Recipient address rejected`.
    pub diagnostic: Option<String>,
    /// The host that gave the diagnostic, without the `dns;` type.
    pub remote_mta: Option<String>,
}

/// One parsed bounce, DSN or auto-reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    pub kind: BounceKind,
    /// The host that wrote the report, without the `dns;` type.
    pub reporting_mta: Option<String>,
    pub recipients: Vec<RecipientStatus>,
    /// Message-ID of the message the report is about, without `<>`.
    pub original_message_id: Option<String>,
    /// Every token-shaped string in the report (not yet verified).
    pub tokens: Vec<String>,
    /// One human line of at most [`MAX_REASON`] characters.
    pub reason: String,
}

impl Bounce {
    /// Whether the probe has failed for good.
    pub fn is_failure(&self) -> bool {
        self.kind.is_failure()
    }
}

/// Parses a raw message. `None` means it is neither a bounce, a DSN nor an
/// auto-reply. Never panics; broken input gives `None` or a partial answer.
pub fn parse(raw: &[u8]) -> Option<Bounce> {
    let raw = raw.get(..MAX_INPUT).unwrap_or(raw);
    let msg = MessageParser::default().parse(raw)?;
    // The accessors of mail-parser index parts[0]; make sure it exists.
    let root = msg.parts.first()?;
    let top = Fields::parse(header_block(raw));
    let subject = msg.subject().unwrap_or_default().trim().to_string();
    let report_type = root
        .content_type()
        .filter(|ct| ct.ctype().eq_ignore_ascii_case("multipart"))
        .filter(|ct| ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report")))
        .and_then(|ct| ct.attribute("report-type"))
        .map(str::to_ascii_lowercase);

    let parts = Parts::collect(&msg, raw);
    // Tokens of an inline-quoted original (free-text bounces), found below.
    let mut quoted_tokens = Vec::new();

    let dsn_report = report_type.as_deref().is_some_and(|t| t.contains("delivery-status"));
    let text_lower = parts.text.to_ascii_lowercase();
    let free_text = if parts.dsn.is_none() {
        free_text_signals(&top, &subject, &text_lower, dsn_report)
    } else {
        false
    };

    let mut bounce = if parts.dsn.is_some() || dsn_report || free_text {
        let text = TextReport::parse(&parts.text, &text_lower, &top);
        let mut b = match &parts.dsn {
            Some(dsn) => from_dsn(dsn),
            None => Bounce {
                kind: text.kind,
                reporting_mta: None,
                recipients: Vec::new(),
                original_message_id: None,
                tokens: Vec::new(),
                reason: String::new(),
            },
        };
        merge_text(&mut b, &text);
        let returned = parts.returned_headers.as_ref().or(text.returned.as_ref());
        b.original_message_id = returned
            .and_then(|f| f.get("message-id"))
            .and_then(first_msg_id)
            .or_else(|| b.original_message_id.take())
            .or_else(|| reply_target(&top));
        if let Some(f) = text.returned.as_ref() {
            for v in f.values() {
                add_tokens(&mut quoted_tokens, find_candidates(v.as_bytes()));
            }
        }
        b
    } else {
        auto_reply(&top, &subject)?
    };
    // Only now that it is ours to report: the token search decodes every part.
    let mut tokens = crate::token::tokens_in_message(raw);
    tokens.truncate(MAX_TOKENS);
    for extra in &parts.returned_raw {
        add_tokens(&mut tokens, crate::token::tokens_in_message(extra));
    }
    add_tokens(&mut tokens, quoted_tokens);
    bounce.tokens = tokens;
    if bounce.reason.is_empty() {
        bounce.reason = reason_for(&bounce, &subject);
    }
    Some(bounce)
}

/// The parts of a report that matter, gathered in one pass over the top
/// level (the returned message's own parts are not searched for reports).
#[derive(Default)]
struct Parts {
    /// Body of the first message/delivery-status part.
    dsn: Option<String>,
    /// Headers of the returned original (message/rfc822 or text/rfc822-headers).
    returned_headers: Option<Fields>,
    /// Raw bytes of returned originals, searched for tokens after decoding.
    returned_raw: Vec<Vec<u8>>,
    /// Human-readable text (plain, and HTML turned to text), capped.
    text: String,
}

impl Parts {
    fn collect<'a>(msg: &'a mail_parser::Message<'a>, top_raw: &'a [u8]) -> Parts {
        let mut out = Parts::default();
        for part in &msg.parts {
            let (ctype, subtype) = part
                .content_type()
                .map(|ct| {
                    (
                        ct.ctype().to_ascii_lowercase(),
                        ct.subtype().unwrap_or_default().to_ascii_lowercase(),
                    )
                })
                .unwrap_or_else(|| ("text".into(), "plain".into()));
            match (&part.body, ctype.as_str(), subtype.as_str()) {
                (_, "message", "delivery-status" | "global-delivery-status") => {
                    // Only the first report counts; a second is not read as text either.
                    out.dsn.get_or_insert_with(|| lossy_capped(part_bytes(part, top_raw)));
                }
                (PartType::Message(_), _, _) => {
                    let raw = part_bytes(part, top_raw);
                    if out.returned_headers.is_none() {
                        out.returned_headers = Some(Fields::parse(header_block(raw)));
                    }
                    if out.returned_raw.len() < 4 {
                        out.returned_raw.push(raw.get(..MAX_TEXT).unwrap_or(raw).to_vec());
                    }
                }
                (_, "text", "rfc822-headers") | (_, "message", "rfc822-headers") => {
                    let raw = part_bytes(part, top_raw);
                    if out.returned_headers.is_none() {
                        out.returned_headers = Some(Fields::parse(raw));
                    }
                    if out.returned_raw.len() < 4 {
                        out.returned_raw.push(raw.get(..MAX_TEXT).unwrap_or(raw).to_vec());
                    }
                }
                (PartType::Text(t), _, _) => push_capped(&mut out.text, t),
                (PartType::Html(h), _, _) => {
                    let h = h.get(..MAX_TEXT).unwrap_or(h);
                    push_capped(&mut out.text, &mail_parser::decoders::html::html_to_text(h));
                }
                _ => {}
            }
        }
        out
    }
}

/// A part's decoded body. `contents()` indexes parts[0] of a nested message,
/// which a broken one may lack: then the part's raw bytes stand in.
fn part_bytes<'a>(part: &'a mail_parser::MessagePart<'a>, top_raw: &'a [u8]) -> &'a [u8] {
    match &part.body {
        PartType::Message(m) if m.parts.is_empty() => {
            top_raw.get(part.offset_body..part.offset_end).unwrap_or_default()
        }
        _ => part.contents(),
    }
}

fn push_capped(out: &mut String, text: &str) {
    if out.len() >= MAX_TEXT {
        return;
    }
    let room = MAX_TEXT - out.len();
    out.push_str(cut(text, room));
    out.push('\n');
}

fn lossy_capped(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.get(..MAX_TEXT).unwrap_or(bytes)).into_owned()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

fn add_tokens(out: &mut Vec<String>, found: Vec<String>) {
    for t in found {
        if out.len() >= MAX_TOKENS {
            return;
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
}

/// The header block at the start of `raw`: everything up to the first empty line.
fn header_block(raw: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < raw.len() {
        let end = raw[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |p| start + p);
        // Only a truly empty line ends the block; blank-looking lines with
        // spaces are (obsolete) folding.
        if raw[start..end].iter().all(|&b| b == b'\r') {
            return &raw[..start];
        }
        start = end + 1;
    }
    raw
}

/// Header fields in order, names lower-cased, folded lines joined. Lenient:
/// lines that are neither fields nor continuations are skipped.
#[derive(Debug, Default, Clone)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn parse(block: &[u8]) -> Fields {
        let text = String::from_utf8_lossy(block.get(..MAX_TEXT).unwrap_or(block));
        let mut out: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = out.last_mut() {
                    if v.len() < MAX_VALUE {
                        v.push(' ');
                        v.push_str(cut(line.trim(), MAX_VALUE - v.len()));
                    }
                }
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim_end();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                continue;
            }
            if out.len() >= MAX_FIELDS {
                break;
            }
            out.push((name.to_ascii_lowercase(), cut(value.trim(), MAX_VALUE).to_string()));
        }
        Fields(out)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn values(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, v)| v.as_str())
    }
}

/// Drops an RFC 3464 type prefix (`rfc822;`, `dns;`, `smtp;`) from a value.
fn untyped(v: &str) -> &str {
    match v.split_once(';') {
        Some((t, rest)) if !t.trim().is_empty() && t.trim().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            rest.trim()
        }
        _ => v.trim(),
    }
}

fn clean_address(v: &str) -> String {
    let v = untyped(v);
    let v = match (v.find('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v,
    };
    v.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The host of a `dns; host` value, without a trailing dot or bracketed address.
fn clean_host(v: &str) -> Option<String> {
    let v = untyped(v);
    let v = v.split_whitespace().next().unwrap_or_default();
    let v = v
        .split('[')
        .next()
        .unwrap_or_default()
        .trim_end_matches(['.', ':', ',']);
    (!v.is_empty()).then(|| v.to_ascii_lowercase())
}

/// The first `<id>` of a Message-ID, In-Reply-To or References value.
fn first_msg_id(v: &str) -> Option<String> {
    msg_ids(v).into_iter().next()
}

fn msg_ids(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(a) = rest.find('<') {
        let Some(b) = rest[a..].find('>') else { break };
        let id = rest[a + 1..a + b].trim();
        if !id.is_empty() && out.len() < 64 {
            out.push(id.to_string());
        }
        rest = &rest[a + b + 1..];
    }
    if out.is_empty() {
        // Some systems drop the brackets.
        if let Some(id) = v.split_whitespace().next().filter(|s| s.contains('@')) {
            out.push(id.to_string());
        }
    }
    out
}

/// What a reply or report says it answers: In-Reply-To, else the last of References.
fn reply_target(top: &Fields) -> Option<String> {
    top.get("in-reply-to")
        .and_then(first_msg_id)
        .or_else(|| top.get("references").and_then(|r| msg_ids(r).pop()))
}

/// An enhanced status code (`5.1.1`, `4.4.7`, `5.1.10`) in `s`.
fn find_status(s: &str) -> Option<String> {
    let b = s.as_bytes();
    for i in 0..b.len() {
        if !matches!(b[i], b'2' | b'4' | b'5') || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.')) {
            continue;
        }
        if b.get(i + 1) != Some(&b'.') {
            continue;
        }
        let mut j = i + 2;
        let d1 = b[j.min(b.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=3).contains(&d1) {
            continue;
        }
        j += d1;
        if b.get(j) != Some(&b'.') {
            continue;
        }
        j += 1;
        let d2 = b[j.min(b.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=3).contains(&d2) {
            continue;
        }
        j += d2;
        if b.get(j)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'.' && b.get(j + 1).is_some_and(u8::is_ascii_digit))
        {
            continue;
        }
        return s.get(i..j).map(str::to_string);
    }
    None
}

/// The diagnostic from its SMTP reply code on (`550 5.1.1 ...`), so the
/// reason reads like the remote's words rather than the reporter's preamble.
fn from_reply_code(s: &str) -> &str {
    let b = s.as_bytes();
    for i in 0..b.len().saturating_sub(3) {
        let code = &b[i..i + 3];
        let starts = i == 0 || matches!(b[i - 1], b' ' | b':' | b'\t' | b'(' | b'"' | b'\'');
        if starts
            && matches!(code[0], b'2' | b'4' | b'5')
            && code[1..].iter().all(u8::is_ascii_digit)
            && matches!(b[i + 3], b' ' | b'-')
        {
            return s.get(i..).unwrap_or(s);
        }
    }
    s
}

fn collapse_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_VALUE));
    for w in s.split_whitespace() {
        if out.len() >= MAX_VALUE {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

// ---------------------------------------------------------------------------
// RFC 3464 message/delivery-status

fn from_dsn(text: &str) -> Bounce {
    let mut per_message = Fields::default();
    let mut groups: Vec<Fields> = Vec::new();
    // Blocks are separated by blank lines; a block naming a second recipient
    // without a blank line (seen from broken MTAs) starts a new group too.
    for block in split_blocks(text) {
        let fields = Fields::parse(block.as_bytes());
        let mut current: Option<Fields> = None;
        for (name, value) in fields.0 {
            let is_rcpt_field = matches!(
                name.as_str(),
                "final-recipient"
                    | "original-recipient"
                    | "action"
                    | "status"
                    | "diagnostic-code"
                    | "remote-mta"
                    | "last-attempt-date"
                    | "will-retry-until"
                    | "x-actual-recipient"
                    | "final-log-id"
            );
            if !is_rcpt_field {
                if per_message.0.len() < MAX_FIELDS {
                    per_message.0.push((name, value));
                }
                continue;
            }
            // Field order varies (Exim writes Action first): a field seen
            // twice is what marks the next recipient.
            let starts_new = current.as_ref().is_some_and(|c| c.has(&name));
            if starts_new {
                if let Some(c) = current.take() {
                    groups.push(c);
                }
            }
            current.get_or_insert_with(Fields::default).0.push((name, value));
        }
        if let Some(c) = current {
            groups.push(c);
        }
        if groups.len() >= MAX_RECIPIENTS {
            break;
        }
    }

    let mut recipients = Vec::new();
    for g in groups.into_iter().take(MAX_RECIPIENTS) {
        let address = g
            .get("final-recipient")
            .or_else(|| g.get("original-recipient"))
            .or_else(|| g.get("x-actual-recipient"))
            .map(clean_address)
            .unwrap_or_default();
        let status = g.get("status").and_then(find_status);
        let action = match g.get("action") {
            Some(a) => a.split_whitespace().next().unwrap_or_default().to_ascii_lowercase(),
            // Without an Action the status class says what happened.
            None => match status.as_deref().and_then(|s| s.chars().next()) {
                Some('5') => "failed".into(),
                Some('4') => "delayed".into(),
                Some('2') => "delivered".into(),
                _ => String::new(),
            },
        };
        if address.is_empty() && action.is_empty() {
            continue;
        }
        recipients.push(RecipientStatus {
            address,
            action,
            status,
            diagnostic: g.get("diagnostic-code").map(collapse_ws).filter(|d| !d.is_empty()),
            remote_mta: g.get("remote-mta").and_then(clean_host),
        });
    }

    Bounce {
        kind: overall_kind(&recipients).unwrap_or(BounceKind::Failed),
        reporting_mta: per_message.get("reporting-mta").and_then(clean_host),
        recipients,
        // Gmail names the original here; the returned headers still win.
        original_message_id: per_message.get("x-original-message-id").and_then(first_msg_id),
        tokens: Vec::new(),
        reason: String::new(),
    }
}

fn split_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                blocks.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.is_empty() {
        blocks.push(cur);
    }
    blocks
}

/// Failed if any recipient failed, else delayed if any is, else the first
/// positive action.
fn overall_kind(recipients: &[RecipientStatus]) -> Option<BounceKind> {
    let kinds: Vec<BounceKind> = recipients
        .iter()
        .filter_map(|r| BounceKind::from_action(&r.action))
        .collect();
    [BounceKind::Failed, BounceKind::Delayed]
        .into_iter()
        .find(|k| kinds.contains(k))
        .or_else(|| kinds.first().copied())
}

// ---------------------------------------------------------------------------
// Free-text bounces (qmail, Exim, old Sendmail, and the human part of DSNs)

/// Phrases that only mail systems write, lower-case.
const MTA_MARKERS: &[&str] = &[
    "this is the mail system at host",
    "this message was created automatically by mail delivery software",
    "this is the qmail-send program at",
    "i'm afraid i wasn't able to deliver your message",
    "the following addresses had permanent fatal errors",
    "the following addresses had transient non-fatal errors",
    "delivery has failed to these recipients or groups",
];

/// Phrases of bounces that a person might write too, lower-case.
const GENERIC_MARKERS: &[&str] = &[
    "couldn't be delivered",
    "address not found",
    "delivery to the following recipient failed",
    "wasn't delivered to",
    "unable to deliver your message",
    "could not be delivered to one or more of its recipients",
    "has not yet been delivered to one or more of its recipients",
    "message could not be delivered",
    "undeliverable",
];

/// Subjects bounces carry, lower-case.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undelivered mail",
    "undeliverable",
    "mail delivery failed",
    "delivery status notification",
    "failure notice",
    "returned mail",
    "delivery failure",
    "mail delivery failure",
    "delayed mail",
    "warning: message",
    "warning: could not send message",
    "non remis",
    "unzustellbar",
    "kunne ikke leveres",
    "ikke leveret",
];

fn is_daemon_sender(top: &Fields) -> bool {
    let from = top.get("from").unwrap_or_default().to_ascii_lowercase();
    let local = clean_address(&from);
    let local = local.split('@').next().unwrap_or_default();
    matches!(local, "mailer-daemon" | "postmaster" | "mail-daemon" | "mailerdaemon")
        || local.starts_with("microsoftexchange")
        || from.contains("mail delivery")
        || from.contains("mailer-daemon")
}

/// Whether a message without a delivery-status part is still a bounce. One
/// signal is not enough for phrases an ordinary mail could quote.
fn free_text_signals(top: &Fields, subject: &str, text_lower: &str, dsn_report: bool) -> bool {
    if dsn_report || top.has("x-failed-recipients") {
        return true;
    }
    let subject = subject.to_ascii_lowercase();
    let daemon = is_daemon_sender(top);
    let bounce_subject = BOUNCE_SUBJECTS.iter().any(|s| subject.contains(s));
    let null_sender = top.get("return-path").is_some_and(|r| r.replace(' ', "") == "<>");
    let mta_marker = MTA_MARKERS.iter().any(|m| text_lower.contains(m));
    let generic_marker = GENERIC_MARKERS.iter().any(|m| text_lower.contains(m));
    (mta_marker && (daemon || bounce_subject || null_sender))
        || (generic_marker && (daemon || null_sender))
        || (daemon && bounce_subject)
}

/// Lines after which a free-text bounce quotes the original, lower-case.
const RETURNED_SEPARATORS: &[&str] = &[
    "--- below this line is a copy of the message.",
    "--- enclosed are the original headers of the message.",
    "------ this is a copy of the message, including all the headers. ------",
    "------ this is a copy of the message's headers. ------",
    "----- original message follows -----",
    "----- unsent message follows -----",
    "----- message header follows -----",
];

/// What the human-readable text of a report says.
struct TextReport {
    kind: BounceKind,
    reporting_mta: Option<String>,
    recipients: Vec<RecipientStatus>,
    /// Headers of an original quoted inline after a separator line.
    returned: Option<Fields>,
}

impl TextReport {
    fn parse(text: &str, lower: &str, top: &Fields) -> TextReport {
        // The report proper ends where the quoted original begins.
        let mut end = text.len();
        let mut returned = None;
        for sep in RETURNED_SEPARATORS {
            if let Some(p) = lower.find(sep).filter(|&p| p < end) {
                end = p;
                let after = text.get(p + sep.len()..).unwrap_or_default();
                // Skip the rest of the separator line and blank lines.
                let after = after.trim_start_matches(|c: char| c != '\n').trim_start();
                returned = Some(Fields::parse(header_block(after.as_bytes())));
            }
        }
        let body = text.get(..end).unwrap_or(text);
        let body_lower = lower.get(..end).unwrap_or(lower);

        let delayed = [
            "has not yet been delivered",
            "will continue trying",
            "still being retried",
            "this is a warning message only",
            "transient non-fatal errors",
            "delivery has been delayed",
            "delivery delayed",
        ]
        .iter()
        .any(|m| body_lower.contains(m));
        let kind = if delayed {
            BounceKind::Delayed
        } else {
            BounceKind::Failed
        };
        let action = if delayed { "delayed" } else { "failed" };

        let mut recipients: Vec<RecipientStatus> = Vec::new();
        let mut loose_diag: Option<String> = None;
        let lines: Vec<&str> = body.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            let trimmed = line.trim();
            let tl = trimmed.to_ascii_lowercase();
            // qmail and Postfix: a paragraph that starts with "<address>:".
            let para_addr = trimmed
                .strip_prefix('<')
                .and_then(|t| t.split_once(">:"))
                .filter(|(a, _)| a.contains('@') && !a.contains(|c: char| c.is_whitespace() || c == '<'));
            if let (Some((addr, first)), false) = (para_addr, line.starts_with([' ', '\t'])) {
                let mut para = vec![first.trim()];
                let mut j = i + 1;
                while j < lines.len() && !lines[j].trim().is_empty() {
                    para.push(lines[j].trim());
                    j += 1;
                }
                let said = para
                    .iter()
                    .find_map(|l| l.strip_prefix("Remote host said:"))
                    .map(str::to_string)
                    .unwrap_or_else(|| para.join(" "));
                // qmail: "Giving up on <ip>."; Postfix: "host <name>[<ip>] said:".
                let remote = para
                    .iter()
                    .find_map(|l| l.strip_prefix("Giving up on ").and_then(clean_host))
                    .or_else(|| {
                        para.iter().find_map(|l| {
                            let (_, h) = l.split_once("host ")?;
                            let word = h.split_whitespace().next()?;
                            word.contains(['.', '[']).then(|| clean_host(word)).flatten()
                        })
                    });
                add_rcpt(&mut recipients, action, addr.to_string(), Some(said), remote);
                i = j;
                continue;
            }
            // Exim: indented addresses, each followed by more-indented detail.
            if tl.contains("following address(es) failed")
                || tl.contains("following address(es) still")
                || tl.contains("address(es) that have not yet been delivered")
            {
                let mut j = i + 1;
                while j < lines.len() {
                    let l = lines[j];
                    if l.trim().is_empty() {
                        if j + 1 < lines.len() && lines[j + 1].starts_with("  ") {
                            j += 1;
                            continue;
                        }
                        break;
                    }
                    let indent = l.len() - l.trim_start().len();
                    if indent > 0 && indent <= 2 && l.contains('@') {
                        let addr = l.split_whitespace().next().unwrap_or_default().to_string();
                        let mut detail = Vec::new();
                        let mut remote = None;
                        let mut k = j + 1;
                        while k < lines.len() && lines[k].len() - lines[k].trim_start().len() > 2 {
                            let d = lines[k].trim();
                            if let Some(h) = d.strip_prefix("host ") {
                                remote = remote.or_else(|| clean_host(h));
                                // "host mx [ip]: Connection timed out" carries the error itself.
                                if let Some((_, err)) = h.split_once("]: ") {
                                    detail.push(err);
                                }
                            } else {
                                detail.push(d);
                            }
                            k += 1;
                        }
                        add_rcpt(
                            &mut recipients,
                            action,
                            addr,
                            (!detail.is_empty()).then(|| detail.join(" ")),
                            remote,
                        );
                        j = k;
                        continue;
                    }
                    j += 1;
                }
                i = j;
                continue;
            }
            // Sendmail: "<address>" lines, then "(reason: ...)" lines, in a dashed section.
            if tl.contains("the following addresses had") {
                let mut j = i + 1;
                let mut last: Option<String> = None;
                while j < lines.len() {
                    let l = lines[j].trim();
                    if l.starts_with("-----") {
                        break;
                    }
                    if let Some(r) = l.strip_prefix("(reason:") {
                        if let Some(a) = last.take() {
                            add_rcpt(
                                &mut recipients,
                                action,
                                a,
                                Some(r.trim_end_matches(')').to_string()),
                                None,
                            );
                        }
                    } else if l.contains('@') {
                        if let Some(a) = last.replace(l.to_string()) {
                            add_rcpt(&mut recipients, action, a, None, None);
                        }
                    }
                    j += 1;
                }
                if let Some(a) = last {
                    add_rcpt(&mut recipients, action, a, None, None);
                }
                i = j;
                continue;
            }
            // Gmail, Exchange: the address named in a sentence.
            for marker in [
                "wasn't delivered to ",
                "your message to ",
                "delivery to the following recipient",
            ] {
                if let Some(p) = tl.find(marker) {
                    let rest = trimmed.get(p + marker.len()..).unwrap_or_default();
                    let next = lines.get(i + 1).copied().unwrap_or_default();
                    let next2 = lines.get(i + 2).copied().unwrap_or_default();
                    if let Some(a) = first_email(rest)
                        .or_else(|| first_email(next))
                        .or_else(|| first_email(next2))
                    {
                        add_rcpt(&mut recipients, action, a, None, None);
                    }
                }
            }
            if tl.contains("delivery has failed to these recipients or groups") {
                let mut j = i + 1;
                while j < lines.len() && j < i + 8 {
                    if let Some(a) = first_email(lines[j]) {
                        add_rcpt(&mut recipients, action, a, None, None);
                        break;
                    }
                    j += 1;
                }
            }
            // Exchange, Office 365 and Gmail quote the remote's reply in prose.
            if loose_diag.is_none() {
                loose_diag = quoted_reply(trimmed, &tl, lines.get(i + 1).copied());
            }
            // Sendmail transcript: the remote host it talked to.
            if let Some(p) = tl.find("while talking to ") {
                let host = trimmed.get(p + "while talking to ".len()..).and_then(clean_host);
                if let (Some(h), Some(r)) = (host, recipients.last_mut()) {
                    r.remote_mta.get_or_insert(h);
                }
            }
            i += 1;
        }

        // Exim names the failed addresses in a header too.
        if let Some(x) = top.get("x-failed-recipients") {
            for a in x.split(',') {
                add_rcpt(&mut recipients, action, a.to_string(), None, None);
            }
        }
        // A reply quoted in prose belongs to the recipient only when there is
        // just one to give it to.
        if let (Some(d), [r]) = (loose_diag, recipients.as_mut_slice()) {
            if r.diagnostic.is_none() {
                r.status = r.status.take().or_else(|| find_status(&d));
                r.diagnostic = Some(d);
            }
        }

        let reporting_mta = ["this is the mail system at host ", "this is the qmail-send program at "]
            .iter()
            .find_map(|m| body_lower.find(m).map(|p| p + m.len()))
            .and_then(|p| body.get(p..))
            .and_then(clean_host);

        TextReport {
            kind,
            reporting_mta,
            recipients,
            returned,
        }
    }
}

/// A remote reply quoted in prose: `Remote Server returned '550 ...'`,
/// `Reported error: 550 ...`, `#550 5.1.1 ... ##`, or Gmail's line after
/// "The response from the remote server was:".
fn quoted_reply(line: &str, lower: &str, next: Option<&str>) -> Option<String> {
    let rest = if let Some(p) = lower.find("remote server returned ") {
        line.get(p + "remote server returned ".len()..)?
            .trim()
            .trim_matches(['\'', '"', '<', '>'])
    } else if let Some(p) = lower.find("reported error: ") {
        line.get(p + "reported error: ".len()..)?.trim()
    } else if lower.starts_with('#') && lower.ends_with("##") {
        line.trim_matches(['#', ' '])
    } else if lower.contains("the response from the remote server was:") {
        next?.trim()
    } else {
        return None;
    };
    let rest = from_reply_code(rest);
    (rest.len() > 3 && matches!(rest.as_bytes().first(), Some(b'4' | b'5'))).then(|| collapse_ws(rest))
}

/// Adds a recipient found in free text, or completes one already found.
fn add_rcpt(
    recipients: &mut Vec<RecipientStatus>,
    action: &str,
    address: String,
    diagnostic: Option<String>,
    remote: Option<String>,
) {
    let address = clean_address(&address);
    if address.is_empty() || !address.contains('@') || recipients.len() >= MAX_RECIPIENTS {
        return;
    }
    let diagnostic = diagnostic.map(|d| collapse_ws(&d)).filter(|d| !d.is_empty());
    if let Some(r) = recipients.iter_mut().find(|r| r.address == address) {
        r.diagnostic = r.diagnostic.take().or(diagnostic);
        r.remote_mta = r.remote_mta.take().or(remote);
        if r.status.is_none() {
            r.status = r.diagnostic.as_deref().and_then(find_status);
        }
        return;
    }
    recipients.push(RecipientStatus {
        status: diagnostic.as_deref().and_then(find_status),
        address,
        action: action.to_string(),
        diagnostic,
        remote_mta: remote,
    });
}

/// The first thing shaped like an e-mail address in `s`.
fn first_email(s: &str) -> Option<String> {
    let at = s.find('@')?;
    let ok = |c: char| c.is_ascii_alphanumeric() || "._%+-=".contains(c);
    let start = s[..at].rfind(|c: char| !ok(c)).map_or(0, |p| p + 1);
    let end = s[at + 1..].find(|c: char| !ok(c)).map_or(s.len(), |p| at + 1 + p);
    let addr = s.get(start..end)?.trim_end_matches('.');
    (start < at && addr.len() > at - start + 1).then(|| addr.to_string())
}

/// Fills what the DSN lacks from the human text: recipients of a report
/// without a usable delivery-status part, diagnostics Sendmail leaves out.
fn merge_text(b: &mut Bounce, text: &TextReport) {
    if b.reporting_mta.is_none() {
        b.reporting_mta = text.reporting_mta.clone();
    }
    if b.recipients.is_empty() {
        b.recipients = text.recipients.clone();
        b.kind = overall_kind(&b.recipients).unwrap_or(text.kind);
        return;
    }
    for t in &text.recipients {
        if let Some(r) = b.recipients.iter_mut().find(|r| r.address == t.address) {
            if r.diagnostic.is_none() {
                r.diagnostic = t.diagnostic.clone();
            }
            if r.remote_mta.is_none() {
                r.remote_mta = t.remote_mta.clone();
            }
            if r.status.is_none() {
                r.status = t.status.clone();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Auto-replies

/// Subject prefixes of auto-replies, lower-case.
const AUTO_SUBJECTS: &[&str] = &[
    "automatic reply:",
    "auto:",
    "autoreply",
    "auto-reply",
    "auto reply",
    "automatisk svar",
    "autosvar",
    "fraværende",
    "fravær:",
    "out of office",
    "abwesenheitsnotiz",
    "automatische antwort",
    "réponse automatique",
    "respuesta automática",
];

/// An auto-reply by RFC 3834 and the de-facto headers. Weak signals (which
/// our own probe or a forwarded mail may carry) need a second one.
fn auto_reply(top: &Fields, subject: &str) -> Option<Bounce> {
    let auto_submitted = top.get("auto-submitted").unwrap_or_default().to_ascii_lowercase();
    let subj = subject.to_ascii_lowercase();
    let strong = auto_submitted.starts_with("auto-replied")
        || top.get("x-autoreply").is_some_and(|v| !v.eq_ignore_ascii_case("no"))
        || top.has("x-autorespond")
        || top.has("x-autoresponder")
        || top
            .get("precedence")
            .is_some_and(|v| v.eq_ignore_ascii_case("auto_reply"))
        || AUTO_SUBJECTS.iter().any(|p| subj.starts_with(p));
    let weak = [
        auto_submitted.starts_with("auto-generated") || auto_submitted.starts_with("auto-notified"),
        top.has("x-ms-exchange-inbox-rules-loop"),
        top.has("in-reply-to") || top.has("references"),
    ]
    .iter()
    .filter(|&&s| s)
    .count();
    if !strong && weak < 2 {
        return None;
    }
    let from = top.get("from").map(clean_address).filter(|a| a.contains('@'));
    let recipients = from
        .map(|address| RecipientStatus {
            address,
            action: "auto-replied".into(),
            status: None,
            diagnostic: None,
            remote_mta: None,
        })
        .into_iter()
        .collect();
    Some(Bounce {
        kind: BounceKind::AutoReply,
        reporting_mta: None,
        recipients,
        original_message_id: reply_target(top),
        tokens: Vec::new(),
        reason: String::new(),
    })
}

// ---------------------------------------------------------------------------
// The one-line reason

fn reason_for(b: &Bounce, subject: &str) -> String {
    let line = if b.kind == BounceKind::AutoReply {
        let who = b
            .recipients
            .first()
            .map(|r| format!(" from {}", r.address))
            .unwrap_or_default();
        format!("auto-reply{who}: {}", collapse_ws(subject))
    } else {
        // The recipient that decided the kind speaks for the report.
        let r = b
            .recipients
            .iter()
            .find(|r| BounceKind::from_action(&r.action) == Some(b.kind))
            .or_else(|| b.recipients.first());
        let what = match r {
            Some(r) => match (&r.diagnostic, &r.status) {
                (Some(d), _) => from_reply_code(untyped(d)).to_string(),
                (None, Some(s)) => format!("{} {} ({s})", r.address, b.kind.as_str()),
                (None, None) => format!("{} {}", r.address, b.kind.as_str()),
            },
            None => format!("delivery {}", b.kind.as_str()),
        };
        let by = r.and_then(|r| r.remote_mta.as_ref()).or(b.reporting_mta.as_ref());
        match by {
            Some(h) => format!("{what} (reported by {h})"),
            None => what,
        }
    };
    let line = collapse_ws(&line.replace(|c: char| c.is_control(), " "));
    if line.chars().count() <= MAX_REASON {
        return line;
    }
    let mut out: String = line.chars().take(MAX_REASON - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests;
