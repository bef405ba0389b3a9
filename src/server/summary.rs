//! The overview the status page opens with, computed for many channels at
//! once from one read of each channel's latest verdict (the ledger keeps it
//! per channel), the open incidents and the watchers: the state of every
//! channel, counts per owner, and which channels the page shows in full.

use std::collections::HashMap;

use crate::config::{Channel, ChannelKind, Config};
use crate::ledger::{ChannelLatest, Incident, StoreError};

use super::AppState;

/// A channel's state on the page: `failing` (open incident or failing last
/// verdict), `degraded` (postcanary could not tell: an `error`, or its inbox
/// is not watched), `ok`, `unknown` (never probed).
pub(super) fn state_of(latest: Option<&ChannelLatest>, open: bool, blind: bool) -> &'static str {
    match (open, latest) {
        (true, _) => "failing",
        (false, Some(l)) if l.verdict == crate::verdict::Verdict::Error => "degraded",
        (false, Some(_)) if blind => "degraded",
        (false, Some(l)) if l.verdict.is_success() => "ok",
        (false, Some(_)) => "failing",
        (false, None) => "unknown",
    }
}

/// What a person reads as a channel's target: the address, or for a form
/// the URL it starts at (never the login's internal name).
pub(super) fn shown_target(ch: &Channel) -> String {
    match &ch.kind {
        ChannelKind::Mail { to, .. } => to.to_string(),
        ChannelKind::Form { steps } => steps
            .iter()
            .find_map(|s| match &s.action {
                crate::config::form::Action::Get(t) | crate::config::form::Action::Post(t) => Some(t.0.clone()),
                _ => None,
            })
            .unwrap_or_else(|| ch.kind.target()),
    }
}

/// Per-owner counts.
#[derive(Default, Clone)]
pub(super) struct OwnerCounts {
    pub owner: String,
    pub total: usize,
    pub ok: usize,
    pub failing: usize,
    pub degraded: usize,
    pub unknown: usize,
}

/// What the page filters by (query parameters; works without scripts).
#[derive(Default, Clone, serde::Deserialize)]
pub(super) struct Filter {
    pub q: Option<String>,
    pub owner: Option<String>,
    pub state: Option<String>,
    pub offset: Option<usize>,
}

impl Filter {
    pub fn active(&self) -> bool {
        self.q.as_deref().is_some_and(|q| !q.trim().is_empty())
            || self.owner.as_deref().is_some_and(|o| !o.is_empty())
            || self.state.as_deref().is_some_and(|s| !s.is_empty())
    }

    fn matches(&self, ch: &Channel, state: &str) -> bool {
        if let Some(o) = self.owner.as_deref().filter(|o| !o.is_empty()) {
            if ch.owner != o {
                return false;
            }
        }
        if let Some(s) = self.state.as_deref().filter(|s| !s.is_empty()) {
            if state != s {
                return false;
            }
        }
        if let Some(q) = self.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            let q = q.to_lowercase();
            let hay = [ch.id.as_str(), ch.name.as_str(), ch.owner.as_str()];
            if !hay.iter().any(|h| h.to_lowercase().contains(&q)) && !shown_target(ch).to_lowercase().contains(&q) {
                return false;
            }
        }
        true
    }
}

/// The overview of every channel.
pub(super) struct Overview {
    pub counts: OwnerCounts,
    /// Per owner, by name.
    pub owners: Vec<OwnerCounts>,
    /// Channel id → state.
    pub states: HashMap<String, &'static str>,
    /// Channels the filter selects, failing and degraded first, then config order.
    pub selected: Vec<String>,
    /// Open incidents that are no channel's (postcanary's own paths, DNS, discovery).
    pub others: Vec<Incident>,
    /// Open incidents of channels, by channel id.
    pub open: HashMap<String, Incident>,
}

pub(super) async fn overview(s: &AppState, config: &Config, filter: &Filter) -> Result<Overview, StoreError> {
    let latest: HashMap<String, ChannelLatest> = s
        .store
        .channel_latest()
        .await?
        .into_iter()
        .map(|l| (l.channel.clone(), l))
        .collect();
    let known: std::collections::HashSet<&str> = config.channels.iter().map(|c| c.id.as_str()).collect();
    let mut open = HashMap::new();
    let mut others = Vec::new();
    for i in s.store.open_incidents().await? {
        if known.contains(i.channel.as_str()) {
            open.insert(i.channel.clone(), i);
        } else {
            others.push(i);
        }
    }
    let blind: Vec<String> = s
        .points
        .0
        .iter()
        .filter(|p| p.blind_since().is_some())
        .map(|p| p.inbox.clone())
        .collect();
    let mut states = HashMap::with_capacity(config.channels.len());
    let mut owners: HashMap<&str, OwnerCounts> = HashMap::new();
    let mut counts = OwnerCounts::default();
    let mut first = Vec::new();
    let mut rest = Vec::new();
    for ch in &config.channels {
        let is_blind = ch.inbox.as_ref().is_some_and(|i| blind.contains(i));
        let state = state_of(latest.get(&ch.id), open.contains_key(&ch.id), is_blind);
        states.insert(ch.id.clone(), state);
        let o = owners.entry(ch.owner.as_str()).or_insert_with(|| OwnerCounts {
            owner: ch.owner.clone(),
            ..OwnerCounts::default()
        });
        for c in [&mut *o, &mut counts] {
            c.total += 1;
            match state {
                "ok" => c.ok += 1,
                "failing" => c.failing += 1,
                "degraded" => c.degraded += 1,
                _ => c.unknown += 1,
            }
        }
        if filter.matches(ch, state) {
            if matches!(state, "failing" | "degraded") {
                first.push(ch.id.clone());
            } else {
                rest.push(ch.id.clone());
            }
        }
    }
    first.extend(rest);
    let mut owners: Vec<OwnerCounts> = owners.into_values().collect();
    owners.sort_by(|a, b| a.owner.cmp(&b.owner));
    Ok(Overview {
        counts,
        owners,
        states,
        selected: first,
        others,
        open,
    })
}
