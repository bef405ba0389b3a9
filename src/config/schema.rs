//! The root file formats (`RawMain`, the main file; `RawInclude`, an
//! included one) and the JSON Schema of the config file (`postcanary
//! schema`), generated from the `Raw*` types the loader deserializes, so the schema and the parser
//! cannot drift apart. The value types that parse from strings describe their
//! string forms here; `deny_unknown_fields` becomes `additionalProperties: false`.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;

use super::channel::{RawChannel, RawDefaults};
use super::form;
use super::inbox::RawInbox;
use super::ledger::RawLedger;
use super::notify::{RawNotifier, RawOwner, RawPaging, RawSilence};
use super::sender::RawSender;
use super::service::{RawDiscover, RawDns, RawHeartbeat, RawServer, RawTelemetry, RawToken};
use super::values::{AfterConfirm, HumanDuration, Schedule, SecretRef};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMain {
    #[serde(default)]
    pub(super) include: Vec<String>,
    pub(super) ledger: Option<RawLedger>,
    pub(super) token: Option<RawToken>,
    pub(super) defaults: Option<RawDefaults>,
    #[serde(default)]
    pub(super) sender: Vec<RawSender>,
    #[serde(default)]
    pub(super) inbox: Vec<RawInbox>,
    #[serde(default)]
    pub(super) channel: Vec<RawChannel>,
    #[serde(default)]
    pub(super) login: Vec<form::RawLogin>,
    #[serde(default)]
    pub(super) step_list: Vec<form::RawStepList>,
    #[serde(default)]
    pub(super) notifier: Vec<RawNotifier>,
    #[serde(default)]
    pub(super) owner: Vec<RawOwner>,
    #[serde(default)]
    pub(super) silence: Vec<RawSilence>,
    pub(super) paging: Option<RawPaging>,
    pub(super) heartbeat: Option<RawHeartbeat>,
    pub(super) server: Option<RawServer>,
    pub(super) telemetry: Option<RawTelemetry>,
    pub(super) dns: Option<RawDns>,
    pub(super) discover: Option<RawDiscover>,
    pub(super) metrics: Option<super::metrics::RawMetrics>,
    pub(super) vantage: Option<super::vantage::RawVantage>,
}

/// An included file may define senders, inboxes and channels.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInclude {
    #[serde(default)]
    pub(super) sender: Vec<RawSender>,
    #[serde(default)]
    pub(super) inbox: Vec<RawInbox>,
    #[serde(default)]
    pub(super) channel: Vec<RawChannel>,
    #[serde(default)]
    pub(super) login: Vec<form::RawLogin>,
    #[serde(default)]
    pub(super) step_list: Vec<form::RawStepList>,
}

/// The duration syntax of `values::parse_duration`.
const DURATION: &str = r"([0-9]+(ms|s|m|h|d|w))+";

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number followed by ms, s, m, h, d or w, or a sum such as \"1h30m\".",
            "pattern": format!(r"^\s*{DURATION}\s*$"),
            "examples": ["90s", "15m", "1h30m"]
        })
    }
}

impl JsonSchema for Schedule {
    fn schema_name() -> Cow<'static, str> {
        "Schedule".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "When a channel is probed: a 5-field cron expression in local time, or \"every <duration>\".",
            "pattern": format!(r"^\s*(every {DURATION}|@\S+|\S+(\s+\S+){{4}})\s*$"),
            "examples": ["every 10m", "*/10 * * * *"]
        })
    }
}

impl JsonSchema for SecretRef {
    fn schema_name() -> Cow<'static, str> {
        "SecretRef".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A secret reference, never the secret: \"env:NAME\" or \"file:PATH\" (relative to the file that names it).",
            "pattern": "^(env:[A-Za-z0-9_]+|file:.+)$",
            "examples": ["env:SMTP_PASSWORD", "file:/run/secrets/smtp"]
        })
    }
}

impl JsonSchema for AfterConfirm {
    fn schema_name() -> Cow<'static, str> {
        "AfterConfirm".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "What to do with a confirmed probe message: \"keep\", \"delete\" or \"move:FOLDER\".",
            "pattern": r"^(keep|delete|move:.*\S.*)$",
            "examples": ["keep", "delete", "move:Postcanary"]
        })
    }
}

/// The schema of a main config file. An included file (`probes/*.toml`)
/// holds a subset of its keys (`sender`, `inbox`, `channel`, `login`), so it
/// validates against the same schema.
pub fn config_schema() -> serde_json::Value {
    // Draft 7: what Taplo (Even Better TOML) and VS Code's JSON support read fully.
    let mut schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<RawMain>();
    schema.insert("title".into(), "postcanary configuration".into());
    schema.insert(
        "description".into(),
        "postcanary.toml and the files its `include` globs pull in. Generated by `postcanary schema`.".into(),
    );
    let mut value = schema.to_value();
    drop_null(&mut value);
    value
}

/// TOML has no null: an absent key is how an `Option` is left out, so the
/// `null` alternatives schemars adds for `Option` fields are removed.
fn drop_null(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(alts)) = map.get_mut("anyOf") {
                alts.retain(|a| a.get("type").and_then(Value::as_str) != Some("null"));
                if alts.len() == 1 {
                    let only = alts.remove(0);
                    map.remove("anyOf");
                    if let Value::Object(inner) = only {
                        for (k, val) in inner {
                            map.entry(k).or_insert(val);
                        }
                    }
                }
            }
            map.values_mut().for_each(drop_null);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}
