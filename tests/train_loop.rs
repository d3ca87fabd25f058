//! The shared training loop: non-finite losses stop training and keep the last good checkpoint.
use genflow::optim::{OptimConfig, Optimizer};
use genflow::train::{self, LoopSettings, Objective};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// `|w|^2`, except at `nan_at`, where the loss is NaN.
struct Quadratic {
    w: Tensor,
    nan_at: u64,
}

impl Objective for Quadratic {
    fn loss(&mut self, step: u64) -> genflow::Result<(Tensor, Vec<(String, f64)>)> {
        let loss = self.w.square().sum(Kind::Float);
        let loss = if step == self.nan_at {
            loss * f64::NAN
        } else {
            loss
        };
        Ok((loss, vec![("w0".to_string(), self.w.double_value(&[0]))]))
    }
}

/// A run of the loop on `Quadratic` in `dir`: the store, its optimiser, the objective (NaN at
/// `nan_at`) and settings that log and checkpoint every step, without a time budget.
fn quadratic_run(
    dir: &std::path::Path,
    nan_at: u64,
) -> (VarStore, Optimizer, Quadratic, LoopSettings) {
    let vs = VarStore::new(Device::Cpu);
    let w = vs.root().var("w", &[3], tch::nn::Init::Const(1.0));
    let optimizer = Optimizer::new(&vs, &OptimConfig::default()).unwrap();
    let settings = LoopSettings {
        steps: 20,
        checkpoint_every: 1,
        log_every: 1,
        out_dir: dir.to_path_buf(),
        config_toml: "x = 1".into(),
        log_grad_stats: false,
        eval_every: None,
        time_budget: None,
        on_nan: train::OnNan::Stop,
        max_rollbacks: 3,
    };
    (vs, optimizer, Quadratic { w, nan_at }, settings)
}

#[test]
fn nan_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, mut optimizer, mut objective, settings) = quadratic_run(dir.path(), 7);
    let settings = LoopSettings {
        checkpoint_every: 3,
        log_grad_stats: true,
        ..settings
    };
    let err = train::run(&vs, &mut optimizer, &mut objective, &settings, 0).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("step 7") && msg.contains("step 6"), "{msg}");
    let (tensors, meta) =
        genflow::train::checkpoint::load(&dir.path().join(train::CHECKPOINT_FILE)).unwrap();
    assert_eq!(meta.step, 6);
    assert!(tensors["w"].isfinite().all().int64_value(&[]) == 1);
    let lines = std::fs::read_to_string(dir.path().join(train::METRICS_FILE)).unwrap();
    let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"], 7);
    assert!(last.get("grad_norm").is_some(), "{last}");
}

/// A spent time budget ends the loop after the current step as if it were the last: a checkpoint
/// at that step, a final metrics line, `out_of_time` set.
#[test]
fn time_budget_ends_training_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, mut optimizer, mut objective, settings) = quadratic_run(dir.path(), u64::MAX);
    let settings = LoopSettings {
        steps: 1000,
        checkpoint_every: 500,
        log_every: 500,
        time_budget: Some(std::time::Duration::ZERO),
        ..settings
    };
    let outcome = train::run(&vs, &mut optimizer, &mut objective, &settings, 0).unwrap();
    assert!(outcome.out_of_time && !outcome.interrupted, "{outcome:?}");
    assert_eq!(outcome.last_step, 1);
    let (_, meta) =
        genflow::train::checkpoint::load(&dir.path().join(train::CHECKPOINT_FILE)).unwrap();
    assert_eq!(meta.step, 1);
    let lines = std::fs::read_to_string(dir.path().join(train::METRICS_FILE)).unwrap();
    assert_eq!(lines.lines().count(), 1);
}

/// `train.on_nan = "rollback"`: the run reloads its last checkpoint, halves the learning rate, skips
/// the failed batch and finishes; every rollback is logged.
#[test]
fn a_nan_step_rolls_back_to_the_last_checkpoint_and_the_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, mut optimizer, mut objective, settings) = quadratic_run(dir.path(), 7);
    let settings = LoopSettings {
        checkpoint_every: 3,
        on_nan: train::OnNan::Rollback,
        ..settings
    };
    let outcome = train::run(&vs, &mut optimizer, &mut objective, &settings, 0).unwrap();
    assert_eq!(outcome.last_step, 20);
    let (tensors, meta) =
        genflow::train::checkpoint::load(&dir.path().join(train::CHECKPOINT_FILE)).unwrap();
    assert_eq!(meta.step, 20);
    assert_eq!(tensors["optim.lr_scale"].double_value(&[]), 0.5);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join(train::METRICS_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let rollback: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["event"] == "rollback").collect();
    assert_eq!(rollback.len(), 1, "{lines:?}");
    assert_eq!(
        (
            rollback[0]["step"].as_u64(),
            rollback[0]["failed_step"].as_u64()
        ),
        (Some(6), Some(8))
    );
    // steps 1..6, the rollback, then 7 and 9..20 (the 8th step's batch is skipped); the learning
    // rate is halved from the rollback on
    let steps: Vec<u64> = lines
        .iter()
        .filter(|l| l["event"].is_null())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (1..=7).chain(9..=20).collect();
    assert_eq!(steps, want);
    let lr = |step: u64| {
        lines
            .iter()
            .find(|l| l["step"] == step && l["event"].is_null())
            .unwrap()["lr"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(lr(9), lr(5) * 0.5);
}

/// A NaN that recurs is rolled back at most `max_rollbacks` times, then the run stops saying so.
#[test]
fn rollbacks_are_bounded() {
    struct AlwaysNanAfter(Quadratic);
    impl Objective for AlwaysNanAfter {
        fn loss(&mut self, step: u64) -> genflow::Result<(Tensor, Vec<(String, f64)>)> {
            let (loss, extra) = self.0.loss(step)?;
            Ok((if step >= 4 { loss * f64::NAN } else { loss }, extra))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (vs, mut optimizer, objective, settings) = quadratic_run(dir.path(), u64::MAX);
    let settings = LoopSettings {
        checkpoint_every: 2,
        on_nan: train::OnNan::Rollback,
        max_rollbacks: 2,
        ..settings
    };
    let mut objective = AlwaysNanAfter(objective);
    let err = train::run(&vs, &mut optimizer, &mut objective, &settings, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("after 2 rollbacks") && err.contains("last good checkpoint (step 4)"),
        "{err}"
    );
}
