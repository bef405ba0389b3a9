//! The file format of `[[channel.step]]` and `[[step_list]]`, and the
//! expansion of a step that says `use = "NAME"` into that list's steps,
//! with its parameters substituted.

// IMPORTS
use super::loader::Loader;
use super::loader::Origin;
use super::template::valid_var;
use super::template::RawFieldValue;
use super::template::BUILTIN_VARS;
use super::values::HumanDuration;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) name: Option<String>,
    pub(super) get: Option<String>,
    pub(super) post: Option<String>,
    pub(super) submit: Option<String>,
    pub(super) login: Option<String>,
    pub(super) handoff: Option<String>,
    /// Insert the steps of the `[[step_list]]` of this name.
    #[serde(rename = "use")]
    pub(super) use_list: Option<String>,
    /// Values of the step list's parameters (with `use`).
    #[serde(default)]
    pub(super) params: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) fields: BTreeMap<String, RawFieldValue>,
    /// The submit button to press: its text, `name=value`, or `css:SELECTOR`.
    pub(super) button: Option<String>,
    #[serde(default)]
    pub(super) files: BTreeMap<String, RawFile>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    pub(super) multipart: Option<bool>,
    pub(super) follow_redirects: Option<bool>,
    pub(super) auto_submit: Option<bool>,
    #[serde(default)]
    pub(super) extract: BTreeMap<String, String>,
    pub(super) expect_status: Option<StatusList>,
    pub(super) expect_url: Option<String>,
    pub(super) expect_text: Option<String>,
    pub(super) refuse_text: Option<String>,
    pub(super) receipt: Option<String>,
    pub(super) timeout: Option<HumanDuration>,
}

#[derive(Deserialize, schemars::JsonSchema, Clone)]
#[serde(untagged)]
pub(super) enum StatusList {
    One(u16),
    Many(Vec<u16>),
}

#[derive(Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) name: String,
    pub(super) content: Option<String>,
    pub(super) path: Option<String>,
    pub(super) content_type: Option<String>,
}

/// A named list of steps used by many channels (`[[step_list]]`).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStepList {
    pub(super) name: String,
    /// Parameter names: written `{{name}}` in the steps, given by `params` where the list is used.
    #[serde(default)]
    pub(super) params: Vec<String>,
    #[serde(default)]
    pub(super) step: Vec<RawStep>,
}

/// A checked `[[step_list]]`, expanded where a step says `use`.
pub(super) struct StepList {
    pub(super) origin: Origin,
    pub(super) name: String,
    pub(super) params: Vec<String>,
    pub(super) steps: Vec<RawStep>,
}

pub(super) fn build_step_lists(loader: &mut Loader, raw: Vec<(Origin, RawStepList)>) -> Vec<StepList> {
    const A: &str = "step_list";
    let mut out: Vec<StepList> = Vec::new();
    for (origin, r) in raw {
        if r.name.is_empty() {
            loader.err(&origin, A, "name", "a step list needs a name");
        } else if out.iter().any(|l| l.name == r.name) {
            loader.err(&origin, A, "name", format!("step list {:?} is already defined", r.name));
        }
        for p in &r.params {
            if !valid_var(p) || BUILTIN_VARS.contains(&p.as_str()) {
                loader.err(
                    &origin,
                    A,
                    "params",
                    format!("{p:?} cannot be a parameter name (letters, digits, _; not a built-in)"),
                );
            }
        }
        if r.step.is_empty() {
            loader.err(&origin, A, "name", "a step list needs at least one [[step_list.step]]");
        }
        for (i, st) in r.step.iter().enumerate() {
            if st.use_list.is_some() {
                let line = loader.files[origin.file].sub_array_key_line(A, origin.index, "step", i, "use");
                let e = loader.files[origin.file].error(
                    line,
                    Some(&format!("step_list.step[{}].use", i + 1)),
                    "a step list cannot use another step list",
                );
                loader.errors.push(e);
            }
        }
        out.push(StepList {
            origin,
            name: r.name,
            params: r.params,
            steps: r.step,
        });
    }
    out
}

/// Replaces `{{param}}` by its value wherever it is written, leaving other `{{variables}}`.
pub(super) fn subst(s: &str, params: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => match params.get(after[..end].trim()) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[start..start + 2 + end + 2]),
            },
            None => {
                out.push_str(&rest[start..]);
                return out;
            }
        }
        rest = &after[after.find("}}").map_or(after.len(), |e| e + 2)..];
    }
    out.push_str(rest);
    out
}

impl RawStep {
    /// This step with the parameters of a step list filled in.
    pub(super) fn with_params(&self, p: &BTreeMap<String, String>) -> RawStep {
        let o = |v: &Option<String>| v.as_ref().map(|s| subst(s, p));
        let m = |v: &BTreeMap<String, String>| v.iter().map(|(k, s)| (subst(k, p), subst(s, p))).collect();
        RawStep {
            name: o(&self.name),
            get: o(&self.get),
            post: o(&self.post),
            submit: o(&self.submit),
            login: o(&self.login),
            handoff: o(&self.handoff),
            use_list: self.use_list.clone(),
            params: self.params.clone(),
            fields: self
                .fields
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        RawFieldValue::One(s) => RawFieldValue::One(subst(s, p)),
                        RawFieldValue::Many(l) => RawFieldValue::Many(l.iter().map(|s| subst(s, p)).collect()),
                    };
                    (subst(k, p), v)
                })
                .collect(),
            button: o(&self.button),
            files: self
                .files
                .iter()
                .map(|(k, f)| {
                    let f = RawFile {
                        name: subst(&f.name, p),
                        content: o(&f.content),
                        path: o(&f.path),
                        content_type: o(&f.content_type),
                    };
                    (subst(k, p), f)
                })
                .collect(),
            headers: m(&self.headers),
            multipart: self.multipart,
            follow_redirects: self.follow_redirects,
            auto_submit: self.auto_submit,
            extract: m(&self.extract),
            expect_status: self.expect_status.clone(),
            expect_url: o(&self.expect_url),
            expect_text: o(&self.expect_text),
            refuse_text: o(&self.refuse_text),
            receipt: o(&self.receipt),
            timeout: self.timeout,
        }
    }
}

/// Where a step was written: the channel's own `i`-th step, or the `step`-th
/// step of a step list used by the channel's `used_at`-th step.
#[derive(Clone, Copy)]
pub(super) enum Src<'a> {
    Channel(usize),
    List {
        list: &'a StepList,
        step: usize,
        used_at: usize,
    },
}

pub(super) fn report(loader: &mut Loader, origin: &Origin, src: Src, key: &str, m: String) {
    match src {
        Src::Channel(i) => loader.err_step(origin, i, key, m),
        Src::List { list, step, used_at } => {
            let use_line =
                loader.files[origin.file].sub_array_key_line("channel", origin.index, "step", used_at, "use");
            let used = match use_line {
                Some(l) => format!("{}:{l}", loader.files[origin.file].path.display()),
                None => loader.files[origin.file].path.display().to_string(),
            };
            let f = &loader.files[list.origin.file];
            let line = f.sub_array_key_line("step_list", list.origin.index, "step", step, key);
            let e = f.error(
                line,
                Some(&format!("step_list.step[{}].{key}", step + 1)),
                format!("step list {:?} (used at {used}): {m}", list.name),
            );
            loader.errors.push(e);
        }
    }
}

/// Replaces each `use` step by the steps of its list, parameters filled in.
pub(super) fn expand<'a>(
    loader: &mut Loader,
    origin: &Origin,
    raw: Vec<RawStep>,
    lists: &'a [StepList],
) -> Vec<(RawStep, Src<'a>)> {
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let Some(name) = &r.use_list else {
            if !r.params.is_empty() {
                loader.err_step(origin, i, "params", "`params` go with `use`".to_string());
            }
            out.push((r, Src::Channel(i)));
            continue;
        };
        let others = [
            ("get", r.get.is_some()),
            ("post", r.post.is_some()),
            ("submit", r.submit.is_some()),
            ("login", r.login.is_some()),
            ("handoff", r.handoff.is_some()),
        ];
        if let Some((key, _)) = others.iter().find(|(_, set)| *set) {
            loader.err_step(origin, i, key, format!("a step does one thing; found use and {key}"));
            continue;
        }
        let Some(list) = lists.iter().find(|l| &l.name == name) else {
            loader.err_step(origin, i, "use", format!("no [[step_list]] named {name:?}"));
            continue;
        };
        let mut ok = true;
        for p in &list.params {
            if !r.params.contains_key(p) {
                loader.err_step(
                    origin,
                    i,
                    "params",
                    format!("step list {name:?} needs the parameter {p:?}"),
                );
                ok = false;
            }
        }
        for k in r.params.keys() {
            if !list.params.contains(k) {
                loader.err_step(
                    origin,
                    i,
                    "params",
                    format!(
                        "step list {name:?} has no parameter {k:?} (it has: {})",
                        list.params.join(", ")
                    ),
                );
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        for (k, st) in list.steps.iter().enumerate() {
            out.push((
                st.with_params(&r.params),
                Src::List {
                    list,
                    step: k,
                    used_at: i,
                },
            ));
        }
    }
    out
}
