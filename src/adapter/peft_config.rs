//! `adapter_config.json`: written with only the keys every PEFT version knows (newer
//! keys break older PEFT), read from whatever PEFT version wrote it, refusing every
//! option that would change what the adapter computes beyond plain LoRA.

use serde::Serialize;
use serde_json::{Map, Number, Value};

use super::{AdapterError, LoraConfig, Target};

/// What `adapter_config.json` says about an adapter.
pub(crate) struct PeftConfig {
    pub lora: LoraConfig,
    pub base_name: Option<String>,
}

/// The minimal keys of formats.md, in that order.
#[derive(Serialize)]
struct Written<'a> {
    peft_type: &'static str,
    task_type: &'static str,
    base_model_name_or_path: &'a str,
    r: usize,
    lora_alpha: Number,
    lora_dropout: Number,
    target_modules: Vec<&'static str>,
    fan_in_fan_out: bool,
    bias: &'static str,
    use_rslora: bool,
    use_dora: bool,
    init_lora_weights: bool,
    modules_to_save: Option<()>,
    rank_pattern: Map<String, Value>,
    alpha_pattern: Map<String, Value>,
    inference_mode: bool,
}

pub(crate) fn write(lora: &LoraConfig, base_name: &str) -> Result<String, AdapterError> {
    if lora.rank == 0 {
        return Err(value_error("r", "a positive integer", "0"));
    }
    if !(0.0..1.0).contains(&lora.dropout) {
        return Err(value_error("lora_dropout", "a number in [0, 1)", &lora.dropout.to_string()));
    }
    let written = Written {
        peft_type: "LORA",
        task_type: "CAUSAL_LM",
        base_model_name_or_path: base_name,
        r: lora.rank,
        lora_alpha: number("lora_alpha", lora.alpha, true)?,
        lora_dropout: number("lora_dropout", lora.dropout, false)?,
        target_modules: lora.targets.iter().map(|t| t.hf_module()).collect(),
        fan_in_fan_out: false,
        bias: "none",
        use_rslora: lora.rslora,
        use_dora: false,
        init_lora_weights: true,
        modules_to_save: None,
        rank_pattern: Map::new(),
        alpha_pattern: Map::new(),
        inference_mode: true,
    };
    serde_json::to_string_pretty(&written).map_err(AdapterError::ConfigJson)
}

/// An f32 as the shortest decimal that reads back as it (8, 0.05), not its f64 widening
/// (0.05000000074505806), so the file says what the user typed; whole numbers as
/// integers where PEFT writes them so (`lora_alpha`).
fn number(key: &str, x: f32, integral_as_int: bool) -> Result<Number, AdapterError> {
    if integral_as_int && x.fract() == 0.0 && x.abs() < 1e15 {
        return Ok(Number::from(x as i64));
    }
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .ok_or_else(|| value_error(key, "a finite number", &x.to_string()))
}

fn value_error(key: &str, expected: &'static str, found: &str) -> AdapterError {
    AdapterError::ConfigValue { key: key.to_string(), expected, found: found.to_string() }
}

/// Keys of newer PEFT versions that change the computation when set. Unset means null,
/// false, or an empty list / object.
const MUST_BE_UNSET: [(&str, &str); 12] = [
    ("use_dora", "DoRA adds a magnitude vector to every module"),
    ("fan_in_fan_out", "fan_in_fan_out (GPT-2 style Conv1D weights) transposes the base weights"),
    ("modules_to_save", "fully trained copies of whole modules are not LoRA"),
    ("rank_pattern", "per-module ranks are not supported; every module uses r"),
    ("alpha_pattern", "per-module alphas are not supported; every module uses lora_alpha"),
    ("layers_to_transform", "adapters on a subset of the layers are not supported"),
    ("layer_replication", "layer replication changes the base model's layers"),
    ("lora_bias", "LoRA biases are not supported"),
    ("use_qalora", "QALoRA pools the input"),
    ("target_parameters", "LoRA on raw parameters is not supported"),
    ("trainable_token_indices", "trainable token embeddings are not supported"),
    ("alora_invocation_tokens", "activated LoRA applies only after its invocation tokens"),
];

pub(crate) fn read(json: &str, n_layers: usize) -> Result<PeftConfig, AdapterError> {
    let value: Value = serde_json::from_str(json).map_err(AdapterError::ConfigJson)?;
    let Value::Object(obj) = value else {
        return Err(value_error("(top level)", "an object", &short(&value)));
    };
    match obj.get("peft_type") {
        Some(Value::String(s)) if s == "LORA" => {}
        other => return Err(value_error("peft_type", "\"LORA\"", &found(other))),
    }
    match obj.get("task_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "CAUSAL_LM" => {}
        Some(other) => {
            return Err(AdapterError::Unsupported {
                key: "task_type",
                found: short(other),
                reason: "only causal language model adapters fit these models",
            })
        }
    }
    for (key, reason) in MUST_BE_UNSET {
        if let Some(v) = obj.get(key).filter(|v| is_set(v)) {
            return Err(AdapterError::Unsupported { key, found: short(v), reason });
        }
    }
    match obj.get("bias") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "none" => {}
        Some(other) => {
            let reason = "training the base model's biases changes it; only \"none\" is supported";
            return Err(AdapterError::Unsupported { key: "bias", found: short(other), reason });
        }
    }
    if let Some(Value::String(init)) = obj.get("init_lora_weights") {
        let init_lc = init.to_lowercase();
        let changes_base = ["pissa", "olora", "corda", "loftq"].iter().any(|p| init_lc.starts_with(p));
        if changes_base {
            let reason = "this initialisation rewrites the base weights; convert the adapter to plain LoRA first";
            return Err(AdapterError::Unsupported { key: "init_lora_weights", found: format!("{init:?}"), reason });
        }
    }
    // PEFT's LoraConfig defaults for absent keys: r 8, lora_alpha 8, lora_dropout 0.
    let rank = match obj.get("r") {
        None => 8,
        Some(v) => {
            v.as_u64().filter(|&r| r > 0).ok_or_else(|| value_error("r", "a positive integer", &short(v)))? as usize
        }
    };
    let alpha = float(&obj, "lora_alpha", 8.0, ("a finite number", |a| a.is_finite()))?;
    let dropout = float(&obj, "lora_dropout", 0.0, ("a number in [0, 1)", |d| (0.0..1.0).contains(&d)))?;
    let rslora = match obj.get("use_rslora") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(value_error("use_rslora", "true or false", &short(other))),
    };
    let targets = targets(obj.get("target_modules"), n_layers)?;
    let base_name = obj.get("base_model_name_or_path").and_then(Value::as_str).map(str::to_string);
    Ok(PeftConfig { lora: LoraConfig { rank, alpha, dropout, rslora, targets }, base_name })
}

/// A number `key`, `default` when absent; `valid` says what it should be and checks it.
fn float(
    obj: &Map<String, Value>,
    key: &str,
    default: f64,
    valid: (&'static str, fn(f64) -> bool),
) -> Result<f32, AdapterError> {
    let (expected, ok) = valid;
    match obj.get(key) {
        None => Ok(default as f32),
        Some(v) => v.as_f64().filter(|&x| ok(x)).map(|x| x as f32).ok_or_else(|| value_error(key, expected, &short(v))),
    }
}

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// `target_modules` as PEFT matches it: a list of module names (a name may carry its
/// parent, `self_attn.q_proj`), `"all-linear"`, or a regular expression that must match
/// a module's full path (`model.layers.3.mlp.up_proj`).
fn targets(value: Option<&Value>, n_layers: usize) -> Result<Vec<Target>, AdapterError> {
    let mut found = Vec::new();
    match value {
        Some(Value::Array(names)) => {
            for name in names {
                let Some(name) = name.as_str() else {
                    return Err(value_error("target_modules", "a list of module names", &short(name)));
                };
                let target = Target::ALL
                    .into_iter()
                    .find(|t| name == t.hf_module() || name == format!("{}.{}", t.hf_parent(), t.hf_module()));
                match target {
                    Some(t) => found.push(t),
                    None => return Err(AdapterError::UnknownTarget { module: name.to_string() }),
                }
            }
        }
        Some(Value::String(s)) if s == "all-linear" => found.extend(Target::ALL),
        Some(Value::String(pattern)) => found = regex_targets(pattern, n_layers)?,
        other => return Err(value_error("target_modules", "a list of module names", &self::found(other))),
    }
    found.sort();
    found.dedup();
    if found.is_empty() {
        return Err(value_error("target_modules", "at least one module", "none"));
    }
    Ok(found)
}

fn regex_targets(pattern: &str, n_layers: usize) -> Result<Vec<Target>, AdapterError> {
    let re = regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|_| value_error("target_modules", "a regular expression Rust's regex crate reads", pattern))?;
    let mut found = Vec::new();
    for t in Target::ALL {
        let path = |i: usize| format!("model.layers.{i}.{}.{}", t.hf_parent(), t.hf_module());
        let hits = (0..n_layers).filter(|&i| re.is_match(&path(i))).count();
        if hits == n_layers && n_layers > 0 {
            found.push(t);
        } else if hits > 0 {
            let reason = "it adapts a projection in only some layers, which is not supported";
            return Err(AdapterError::Unsupported { key: "target_modules", found: format!("{pattern:?}"), reason });
        }
    }
    Ok(found)
}

fn found(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing".to_string(), short)
}

/// A JSON value for an error message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
