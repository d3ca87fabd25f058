//! Saving and restoring the optimiser's state for checkpoints.
//!
//! Names: `optim.step_count` (the schedule's step), `optim.step.<param>` (the parameter's own step
//! count, 0 if never updated) and `optim.<buffer>.<param>` for each buffer of
//! [`rules::buffer_names`](super::rules) (`exp_avg`, `exp_avg_sq`, `exp_inf`, `momentum_buffer`,
//! `square_avg`, `grad_avg`), present once the parameter has been updated. Counts are 0-d int64.

use std::collections::{HashMap, HashSet};

use tch::Tensor;

use super::rules::{buffer_names, ParamState};
use super::Optimizer;
use crate::{Error, Result};

const STEP_COUNT: &str = "optim.step_count";
/// The name of the learning-rate factor left by rollbacks (absent when it is 1).
const LR_SCALE: &str = "optim.lr_scale";

impl Optimizer {
    /// The state needed to resume exactly: `optim.step_count`, `optim.step.<param>` and
    /// `optim.<buffer>.<param>`. Buffers are shallow clones that the next [`Optimizer::step`]
    /// changes in place: save them before stepping.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let names = buffer_names(&self.config);
        let mut out = vec![(STEP_COUNT.to_string(), Tensor::from(self.step_count as i64))];
        if self.lr_scale != 1.0 {
            out.push((LR_SCALE.to_string(), Tensor::from(self.lr_scale)));
        }
        for p in &self.params {
            out.push((
                format!("optim.step.{}", p.name),
                Tensor::from(p.state.step as i64),
            ));
            for (buffer, tensor) in names.iter().zip(&p.state.buffers) {
                out.push((format!("optim.{buffer}.{}", p.name), tensor.shallow_clone()));
            }
        }
        out
    }

    /// Restores the state written by [`Optimizer::state_tensors`] from `named` (which may hold other
    /// tensors too; only names starting with `optim.` are read). Every entry this optimiser needs
    /// must be present with the parameter's shape, and no other `optim.` entry may be; on error
    /// nothing is changed.
    pub fn load_state_tensors(&mut self, named: &HashMap<String, Tensor>) -> Result<()> {
        let names = buffer_names(&self.config);
        let mut used: HashSet<String> = HashSet::new();
        let lr_scale = match named.get(LR_SCALE) {
            None => 1.0,
            Some(t) => {
                used.insert(LR_SCALE.to_string());
                let scale = t.f_reshape([-1])?.f_double_value(&[0])?;
                if !(scale > 0.0 && scale <= 1.0) {
                    return Err(Error::config(format!(
                        "optimiser state {LR_SCALE} = {scale} is not a learning-rate factor in (0, 1]"
                    )));
                }
                scale
            }
        };
        let mut get = |key: String| -> Result<&Tensor> {
            let tensor = named.get(&key).ok_or_else(|| {
                Error::config(format!(
                    "optimiser state lacks {key}; the checkpoint was written for another model or \
                     optimiser configuration ({})",
                    self.config.kind
                ))
            })?;
            used.insert(key);
            Ok(tensor)
        };
        let step_count = count(STEP_COUNT, get(STEP_COUNT.to_string())?)?;
        let mut states = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let step_key = format!("optim.step.{}", p.name);
            let step = count(&step_key, get(step_key.clone())?)?;
            let mut buffers = Vec::new();
            if step > 0 {
                for buffer in &names {
                    let key = format!("optim.{buffer}.{}", p.name);
                    let saved = get(key.clone())?;
                    if saved.size() != p.tensor.size() {
                        return Err(Error::shape(format!(
                            "optimiser state {key} has shape {:?} but the parameter has shape {:?}",
                            saved.size(),
                            p.tensor.size()
                        )));
                    }
                    let mut copy = p.tensor.f_zeros_like()?;
                    tch::no_grad(|| copy.f_copy_(saved))?;
                    buffers.push(copy);
                }
            }
            states.push(ParamState { step, buffers });
        }
        let mut unknown: Vec<&String> = named
            .keys()
            .filter(|k| k.starts_with("optim.") && !used.contains(*k))
            .collect();
        unknown.sort();
        if let Some(first) = unknown.first() {
            return Err(Error::config(format!(
                "the checkpoint holds optimiser state this optimiser ({}, buffers {:?}) does not use: {first} \
                 ({} such entries); was it written with another optimiser kind or model?",
                self.config.kind,
                names,
                unknown.len()
            )));
        }
        for (p, state) in self.params.iter_mut().zip(states) {
            p.state = state;
        }
        self.step_count = step_count;
        self.lr_scale = lr_scale;
        Ok(())
    }
}

/// Reads a non-negative count stored as a one-element tensor.
fn count(key: &str, tensor: &Tensor) -> Result<u64> {
    if tensor.numel() != 1 {
        return Err(Error::shape(format!(
            "optimiser state {key} should hold one number, has shape {:?}",
            tensor.size()
        )));
    }
    let value = tensor.f_reshape([1])?.f_double_value(&[0])?;
    if value >= 0.0 && value.fract() == 0.0 {
        Ok(value as u64)
    } else {
        Err(Error::config(format!(
            "optimiser state {key} = {value} is not a step count"
        )))
    }
}
