//! Mail probes: build the tagged message and hand it to the channel's sender,
//! retrying temporary refusals (4xx) and our own transient failures while the
//! deadline allows.

use std::time::Duration;

use tracing::Instrument;

use crate::config::{Channel, Expect, SenderConfig};
use crate::ledger::StoreError;
use crate::sender::message::{build, ProbeMessage};
use crate::sender::SendOutcome;
use crate::verdict::{now_millis, Judgement, Verdict};

use super::{record, ProbeContext, Started};

/// Attempts against our own relay before a transient failure becomes `error`.
const OWN_SIDE_ATTEMPTS: u32 = 3;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

fn verdict(verdict: Verdict, detail: String) -> Judgement {
    Judgement {
        verdict,
        detail,
        at: now_millis(),
        found: None,
        latency_ms: None,
        fault: None,
    }
}

/// First retry delay: a twentieth of the deadline, between 200 ms and 5 s.
fn first_backoff(deadline: Duration) -> Duration {
    (deadline / 20).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

pub async fn send(
    ctx: &ProbeContext,
    channel: &Channel,
    sender: &SenderConfig,
    to: &lettre::Address,
    p: &Started,
) -> Result<(), StoreError> {
    let message = match build(&ProbeMessage {
        token: &p.message_token,
        channel_id: &channel.id,
        channel_name: &channel.name,
        from: &sender.from,
        to,
        dkim: sender.dkim.as_ref(),
    }) {
        Ok(m) => m.formatted(),
        Err(e) => {
            record(ctx, &p.id, &channel.id, verdict(Verdict::Error, e)).await?;
            return Ok(());
        }
    };
    let mut backoff = first_backoff(channel.deadline);
    let mut own_failures = 0;
    for attempt in 1.. {
        let span = tracing::info_span!("smtp", channel = %channel.id, relay = %sender.name, attempt);
        let outcome = crate::sender::send(&ctx.relays, sender, to, &message)
            .instrument(span)
            .await;
        let now = now_millis();
        let wait = Duration::from_millis(u64::try_from(p.deadline - now).unwrap_or(0));
        let can_retry = backoff < wait;
        match outcome {
            SendOutcome::Accepted { reply, at } => {
                ctx.store.record_sent(&p.id, at, &reply).await?;
                tracing::info!(channel = %channel.id, token = %p.token, %reply, "accepted by relay");
                return Ok(());
            }
            SendOutcome::Refused { reply } => {
                ctx.store.add_event(&p.id, now, "smtp-refused", &reply).await?;
                let j = if channel.expect == Expect::Bounce {
                    verdict(
                        Verdict::ExpectedBounce,
                        format!("refused at SMTP time as expected: {reply}"),
                    )
                } else {
                    verdict(Verdict::Rejected, format!("refused at SMTP time: {reply}"))
                };
                tracing::warn!(channel = %channel.id, token = %p.token, %reply, verdict = %j.verdict, "refused");
                record(ctx, &p.id, &channel.id, j).await?;
                return Ok(());
            }
            SendOutcome::Deferred { reply } => {
                ctx.store.add_event(&p.id, now, "smtp-deferred", &reply).await?;
                tracing::warn!(channel = %channel.id, %reply, attempt, "temporarily refused");
                if !can_retry {
                    let detail = format!("temporarily refused until the deadline ({attempt} attempts), last: {reply}");
                    record(ctx, &p.id, &channel.id, verdict(Verdict::Rejected, detail)).await?;
                    return Ok(());
                }
            }
            SendOutcome::OwnSide { error, retryable } => {
                own_failures += 1;
                ctx.store.add_event(&p.id, now, "send-error", &error).await?;
                tracing::warn!(channel = %channel.id, %error, attempt, "could not send");
                if !retryable || own_failures >= OWN_SIDE_ATTEMPTS || !can_retry {
                    record(ctx, &p.id, &channel.id, verdict(Verdict::Error, error)).await?;
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_scales_with_the_deadline() {
        assert_eq!(first_backoff(Duration::from_secs(2)), Duration::from_millis(200));
        assert_eq!(first_backoff(Duration::from_secs(20)), Duration::from_secs(1));
        assert_eq!(first_backoff(Duration::from_secs(900)), Duration::from_secs(5));
    }
}
