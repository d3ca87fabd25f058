//! The GAN updates with one optimiser: stepping the discriminator's and the generator's parameters
//! in parts (`Optimizer::step_part`) is exactly PyTorch's two-optimiser alternating GAN (two
//! optimisers over separate stores, each with its own learning rate, transform and global clip,
//! schedules advanced once per iteration); the single-loss update is one step of one optimiser.
use genflow::optim::{
    GroupConfig, OptimConfig, OptimKind, Optimizer, ScheduleConfig, TransformConfig,
};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// A store holding `name.w` (and nothing else), initialised to `init`, in f64.
fn store_with(names: &[(&str, &[f64])]) -> VarStore {
    let mut vs = VarStore::new(Device::Cpu);
    for (name, init) in names {
        let _ = (vs.root() / *name).var_copy("w", &Tensor::from_slice(init));
    }
    vs.double();
    vs
}

fn weight(vs: &VarStore, name: &str) -> Tensor {
    vs.variables()[&format!("{name}.w")].shallow_clone()
}

/// `L_D(g, d)` and `L_G(g, d)` of a toy two-player game, both depending on both players.
fn d_loss(g: &Tensor, d: &Tensor) -> Tensor {
    (d.sum(Kind::Float) * g.sin().sum(Kind::Float) + d.square().sum(Kind::Float) * 0.3).exp()
}

fn g_loss(g: &Tensor, d: &Tensor) -> Tensor {
    -(d.cos().sum(Kind::Float) * g.sum(Kind::Float)) + g.square().sum(Kind::Float)
}

fn base_config(lr: f64) -> OptimConfig {
    OptimConfig {
        betas: (0.5, 0.999),
        global_clip_norm: Some(0.7),
        schedule: ScheduleConfig::Cosine {
            warmup_steps: 3,
            total_steps: Some(10),
            final_mult: 0.0,
        },
        ..OptimConfig::new(OptimKind::Adam, lr)
    }
}

#[test]
fn stepping_in_parts_is_two_optimisers() {
    let g0 = [0.3, -0.2, 0.9];
    let d0 = [0.1, 0.4, -0.5, 0.2];
    let lr = 0.05;
    // one store, one optimiser with a group per net (powers of two: the products of learning
    // rates are exact in any order)
    let both = store_with(&[("generator", &g0), ("discriminator", &d0)]);
    let mut config = base_config(lr);
    config.groups = vec![
        GroupConfig {
            lr_mult: 0.5,
            transforms: vec![TransformConfig::ClipNorm(0.4)],
            ..GroupConfig::new("generator.*")
        },
        GroupConfig {
            lr_mult: 2.0,
            ..GroupConfig::new("discriminator.*")
        },
    ];
    let mut one = Optimizer::new(&both, &config).unwrap();
    // PyTorch's way: two stores, two optimisers
    let gs = store_with(&[("generator", &g0)]);
    let ds = store_with(&[("discriminator", &d0)]);
    let mut g_config = base_config(lr * 0.5);
    g_config.groups = vec![GroupConfig {
        transforms: vec![TransformConfig::ClipNorm(0.4)],
        ..GroupConfig::new("generator.*")
    }];
    let mut opt_g = Optimizer::new(&gs, &g_config).unwrap();
    let mut opt_d = Optimizer::new(&ds, &base_config(lr * 2.0)).unwrap();

    let is_d = |n: &str| n.starts_with("discriminator.");
    let is_g = |n: &str| n.starts_with("generator.");
    for _ in 0..8 {
        // one optimiser: D's part, then G's part against the updated D
        let (g, d) = (weight(&both, "generator"), weight(&both, "discriminator"));
        one.zero_grad();
        d_loss(&g.detach(), &d).backward();
        one.step_part(&is_d).unwrap();
        g_loss(&g, &d.detach()).backward();
        one.step_part(&is_g).unwrap();
        one.finish_step();
        // two optimisers
        let (g, d) = (weight(&gs, "generator"), weight(&ds, "discriminator"));
        opt_d.zero_grad();
        d_loss(&g.detach(), &d).backward();
        opt_d.step().unwrap();
        opt_g.zero_grad();
        g_loss(&g, &d.detach()).backward();
        opt_g.step().unwrap();
    }
    assert_eq!(one.step_count(), 8);
    for (name, other) in [("generator", &gs), ("discriminator", &ds)] {
        let a = weight(&both, name);
        let b = weight(other, name);
        let diff = (&a - &b).abs().max().double_value(&[]);
        assert!(diff < 1e-15, "{name}: {a:?} vs {b:?}");
        let moved = (&a
            - Tensor::from_slice(if name == "generator" {
                &g0[..]
            } else {
                &d0[..]
            }))
        .abs()
        .max()
        .double_value(&[]);
        assert!(moved > 1e-3, "{name} did not move");
    }
    // the schedule followed the training steps, not the parts
    assert_eq!(one.lr(), opt_g.lr() * 2.0);
}

/// A part step leaves the other parameters, their gradients and their optimiser state alone.
#[test]
fn a_part_step_touches_only_its_parameters() {
    let vs = store_with(&[("generator", &[1.0, 2.0]), ("discriminator", &[3.0])]);
    let mut opt = Optimizer::new(&vs, &OptimConfig::new(OptimKind::Adam, 0.1)).unwrap();
    let (g, d) = (weight(&vs, "generator"), weight(&vs, "discriminator"));
    (g.sum(Kind::Float) * d.sum(Kind::Float)).backward();
    let report = opt.step_part(&|n| n.starts_with("discriminator.")).unwrap();
    assert_eq!(Vec::<f64>::try_from(&g).unwrap(), [1.0, 2.0]);
    assert_ne!(d.double_value(&[0]), 3.0);
    assert_eq!(Vec::<f64>::try_from(g.grad()).unwrap(), [3.0, 3.0]);
    assert_eq!(opt.step_count(), 0);
    let state: Vec<String> = opt
        .state_tensors()
        .into_iter()
        .filter(|(_, t)| t.numel() > 1 || t.kind() != Kind::Int64)
        .map(|(n, _)| n)
        .collect();
    assert!(
        state.iter().all(|n| n.ends_with("discriminator.w")),
        "{state:?}"
    );
    // the report covers the part: |grad d| = |g_0 + g_1| = 3
    assert!((report.global_grad_norm - 3.0).abs() < 1e-12, "{report:?}");
}
