//! A whole job's configuration: the run-level settings and the task's, read from one TOML
//! document and written back as one.
//!
//! The document's top level holds `task = "..."`, the run-level keys ([`RunConfig::KEYS`]) and the
//! task's own tables. `[train]` is shared: its keys that [`crate::train::TrainConfig`] knows are
//! the run's, the others (the flows' `logdet`, say) go to the task's own `train` settings.

use super::TaskConfig;
use crate::config::{ConfigDocument, RunConfig};
use crate::train::checkpoint::CheckpointMeta;
use crate::train::TrainConfig;
use crate::{Error, Result};

/// The task of a document without a `task` key (the first task genflow had).
const DEFAULT_TASK: &str = "toy-density";

/// A job: what `genflow train` reads and stores beside its checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    pub run: RunConfig,
    pub task: TaskConfig,
}

impl JobConfig {
    /// A preset name or a TOML file, with `key=value` overrides ([`ConfigDocument::load`]).
    pub fn resolve(name_or_path: &str, overrides: &[String]) -> Result<Self> {
        Self::from_document(&ConfigDocument::load(name_or_path, overrides)?)
    }

    /// The job a document describes, validated.
    pub fn from_document(doc: &ConfigDocument) -> Result<Self> {
        let mut table = doc.table().clone();
        let name = match table.remove("task") {
            None => DEFAULT_TASK.to_string(),
            Some(toml::Value::String(name)) => name,
            Some(other) => {
                return Err(doc.located_error(
                    &["task".into()],
                    &format!(
                        "expected the name of a task ({}), got {other}",
                        TaskConfig::NAMES.join(", ")
                    ),
                ))
            }
        };
        let (run_table, task_table) = split(table);
        let run: RunConfig = doc.decode("", run_table.into())?;
        let task =
            TaskConfig::decode(doc, &name, task_table).map_err(|e| hint_train_keys(e, &name))?;
        run.validate()?;
        task.validate(&run)?;
        Ok(JobConfig { run, task })
    }

    /// The job stored in a checkpoint (configurations of format 1 are upgraded first).
    pub fn from_checkpoint(meta: &CheckpointMeta, origin: &str) -> Result<Self> {
        let doc = ConfigDocument::parse(origin, &meta.config_toml)?;
        if meta.config_format >= 2 {
            return Self::from_document(&doc);
        }
        let mut table = doc.table().clone();
        let name = table
            .get("task")
            .and_then(|t| t.as_str())
            .unwrap_or(DEFAULT_TASK)
            .to_string();
        TaskConfig::migrate_v1(&name, &mut table);
        let text = toml::to_string(&table).map_err(|e| {
            Error::config(format!(
                "{origin}: cannot upgrade the stored configuration: {e}"
            ))
        })?;
        Self::from_document(&ConfigDocument::parse(origin, &text)?)
    }

    /// The configuration as TOML: `task`, the run-level keys, the task's tables, `[train]` (shared
    /// and task keys together) and `[optim]`.
    pub fn to_toml(&self) -> Result<String> {
        let fail = |e: &dyn std::fmt::Display| {
            Error::config(format!("cannot write the configuration: {e}"))
        };
        let mut run = toml::Table::try_from(&self.run).map_err(|e| fail(&e))?;
        let mut task = self.task.to_table()?;
        let mut out = toml::Table::new();
        out.insert("task".into(), self.task.name().into());
        for key in ["seed", "device", "dtype"] {
            if let Some(v) = run.remove(key) {
                out.insert(key.into(), v);
            }
        }
        let task_train = task.remove("train");
        out.extend(task);
        if let Some(toml::Value::Table(mut train)) = run.remove("train") {
            if let Some(toml::Value::Table(extra)) = task_train {
                train.extend(extra);
            }
            out.insert("train".into(), train.into());
        }
        out.extend(run);
        toml::to_string(&out).map_err(|e| fail(&e))
    }
}

/// Splits a document's table into the run's keys and the task's, sharing `[train]` by key.
fn split(mut table: toml::Table) -> (toml::Table, toml::Table) {
    let mut run = toml::Table::new();
    for key in RunConfig::KEYS {
        if let Some(v) = table.remove(key) {
            run.insert(key.into(), v);
        }
    }
    if let Some(toml::Value::Table(train)) = run.get_mut("train") {
        let shared = struct_fields::<TrainConfig>();
        let task_keys: Vec<String> = train
            .keys()
            .filter(|k| !shared.contains(&k.as_str()))
            .cloned()
            .collect();
        let task_train: toml::Table = task_keys
            .iter()
            .filter_map(|k| train.remove(k).map(|v| (k.clone(), v)))
            .collect();
        if !task_train.is_empty() {
            table.insert("train".into(), task_train.into());
        }
    }
    (run, table)
}

/// An error about the task's part of `[train]` with the shared keys listed too, so that a typo
/// in a shared key reads right.
fn hint_train_keys(e: Error, task: &str) -> Error {
    match e {
        Error::Config(msg)
            if (msg.contains(" train.") || msg.contains(" train:"))
                && msg.contains("unknown field") =>
        {
            Error::config(format!(
                "{msg} ([train] settings of every task: {}; task {task} may add its own)",
                struct_fields::<TrainConfig>().join(", ")
            ))
        }
        other => other,
    }
}

/// The field names a `#[derive(Deserialize)]` struct accepts, read from what its derived code
/// passes to `Deserializer::deserialize_struct`.
fn struct_fields<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    use serde::forward_to_deserialize_any;

    #[derive(Debug)]
    struct Probe;
    impl std::fmt::Display for Probe {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Probe {}
    impl de::Error for Probe {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Probe
        }
    }

    struct FieldsOf<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for FieldsOf<'_> {
        type Error = Probe;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Probe> {
            Err(Probe)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> std::result::Result<V::Value, Probe> {
            *self.0 = fields;
            Err(Probe)
        }
        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldsOf(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_config_fields_are_read_from_serde() {
        let fields = struct_fields::<TrainConfig>();
        assert!(fields.contains(&"batch_size") && fields.contains(&"max_minutes"));
        assert!(!fields.contains(&"logdet"));
    }

    /// Every preset survives a round trip through TOML unchanged.
    #[test]
    fn presets_round_trip() {
        for preset in crate::config::PRESETS {
            let job = JobConfig::resolve(preset.name, &[]).unwrap();
            let text = job.to_toml().unwrap();
            let again =
                JobConfig::from_document(&ConfigDocument::parse("x", &text).unwrap()).unwrap();
            assert_eq!(job, again, "{}:\n{text}", preset.name);
        }
    }
}
