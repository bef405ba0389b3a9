//! Probes: one attempt on a channel. The shared part — token, ledger row
//! written before anything leaves, evidence — lives here; each channel kind
//! has its own file that only knows how to send or submit once.

pub mod form;
pub mod handoff;
pub mod http;
pub mod mail;

use std::time::SystemTime;

use tracing::Instrument;

use crate::config::{Channel, ChannelKind, Config};
use crate::ledger::{DynStore, NewProbe, StoreError};
use crate::token::TokenKey;
use crate::verdict::{now_millis, Judgement, Millis, Verdict};

/// What a probe needs from the running system.
#[derive(Clone)]
pub struct ProbeContext {
    pub store: DynStore,
    pub key: TokenKey,
    /// This process's run id (see [`NewProbe::run_id`]).
    pub run_id: String,
    pub verdicts: crate::verdict::VerdictSink,
    /// SMTP sessions kept with the relays, shared by every probe.
    pub relays: crate::sender::smtp::Relays,
    /// The sends in progress at once, shared by every probe: a probe's row
    /// is written when it is due, then it waits here for its turn to send.
    pub sends: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A probe that has been written to the ledger.
#[derive(Clone, Debug)]
pub struct Started {
    pub id: String,
    /// The token as shown and stored: `pc-<ULID>`, without its tag.
    pub token: String,
    /// The whole token, tag included, for the message or form only: the tag
    /// is the probe's proof and is never logged, stored or shown.
    pub message_token: String,
    pub channel: String,
    pub deadline: Millis,
}

/// Writes the probe to the ledger, then sends it. Returns once the channel
/// has accepted the message (the watchers and sweeper take it from there) or
/// a verdict has been reached at send time. Never returns a probe failure as
/// an error: a failed probe is a verdict. Only the ledger failing is an error.
pub async fn run(ctx: &ProbeContext, config: &Config, channel: &Channel) -> Result<Started, StoreError> {
    let now = SystemTime::now();
    let token = ctx.key.issue(now);
    let created_at = now_millis();
    let deadline = created_at + i64::try_from(channel.deadline.as_millis()).unwrap_or(i64::MAX / 2);
    let target = channel.kind.target();
    let started = Started {
        id: token.id(),
        token: token.public(),
        message_token: token.to_string(),
        channel: channel.id.clone(),
        deadline,
    };
    ctx.store
        .insert_probe(&NewProbe {
            id: started.id.clone(),
            token: started.token.clone(),
            channel: channel.id.clone(),
            kind: channel.kind.name().to_string(),
            expect: channel.expect,
            inbox: channel.inbox.clone(),
            target,
            created_at,
            deadline,
            run_id: ctx.run_id.clone(),
        })
        .await?;
    tracing::info!(channel = %channel.id, token = %started.token, "probe started");
    // Closed only when the engine is dropped; then the row stays pending and is resumed on restart.
    let Ok(_turn) = ctx.sends.acquire().await else {
        return Ok(started);
    };
    // The send runs inside the probe's trace: its SMTP spans become children of the `probe` span.
    let cx = crate::telemetry::start_probe(&started.id, &channel.id, &started.token);
    let send_span = tracing::info_span!("probe_send", channel = %channel.id);
    let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&send_span, cx);
    send(ctx, config, channel, &started).instrument(send_span).await?;
    Ok(started)
}

async fn send(ctx: &ProbeContext, config: &Config, channel: &Channel, started: &Started) -> Result<(), StoreError> {
    match &channel.kind {
        ChannelKind::Mail { to, via } => {
            let Some(sender) = config.sender(via) else {
                // Validation guarantees the sender exists; be explicit anyway.
                let j = Judgement {
                    verdict: Verdict::Error,
                    detail: format!("no sender named {via:?}"),
                    at: now_millis(),
                    found: None,
                    latency_ms: None,
                    fault: None,
                };
                record(ctx, &started.id, &channel.id, j).await?;
                return Ok(());
            };
            mail::send(ctx, channel, sender, to, started).await
        }
        ChannelKind::Form { steps } => form::submit(ctx, config, channel, steps, started).await,
    }
}

/// Records a verdict and, if it was the one that counted, reports it.
pub async fn record(ctx: &ProbeContext, id: &str, channel: &str, j: Judgement) -> Result<bool, StoreError> {
    crate::ledger::record_with(&ctx.store, &ctx.verdicts, id, channel, j).await
}
