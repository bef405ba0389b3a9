//! Senders hand a probe message to the mail system. One file per sender kind;
//! the outcome of an attempt says whose fault a failure is.

pub mod dns;
pub mod message;
pub mod mx;
pub mod smtp;

/// Hands one message to the sender: its relay (over a session kept in
/// `relays` when there is one), or the recipient domain's MX.
pub async fn send(
    relays: &smtp::Relays,
    cfg: &crate::config::SenderConfig,
    to: &lettre::Address,
    message: &[u8],
) -> SendOutcome {
    match &cfg.mx {
        Some(mx) => mx::send(cfg, mx, to, message).await,
        None => smtp::send_pooled(relays, cfg, to, message).await,
    }
}

/// What one attempt to hand over a message came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted; `reply` is the server's final answer (with its queue id),
    /// `at` the moment it came (ms): the probe's send time, before QUIT.
    Accepted { reply: String, at: i64 },
    /// Permanently refused (5xx) for the recipient or the content: the channel refused.
    Refused { reply: String },
    /// Temporarily refused (4xx): try again while the deadline allows.
    Deferred { reply: String },
    /// The prober's own side failed: its relay unreachable, TLS, credentials.
    OwnSide { error: String, retryable: bool },
}
