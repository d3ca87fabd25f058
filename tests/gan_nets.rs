//! The GAN networks: every image size, kernel and normalisation builds nets of the right shapes;
//! spectrally normalised discriminator layers have spectral norm 1 (SVD of the reshaped weight);
//! sizes that the strides cannot halve are refused.
use genflow::gan::{ConvGanConfig, Gan, GeneratorNorm};
use genflow::nn::{Geometry, SpectralLinear};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn config(image_shape: [i64; 3], levels: usize, kernel: i64) -> ConvGanConfig {
    ConvGanConfig {
        image_shape,
        z_dim: 6,
        width: 4,
        levels,
        kernel,
        generator_norm: GeneratorNorm::Batch,
        discriminator_batch_norm: true,
        spectral_norm: false,
        encoder: false,
    }
}

#[test]
fn conv_nets_have_the_image_shapes() {
    let cases = [
        ([1, 28, 28], 2, 4, GeneratorNorm::Batch, false, false),
        ([3, 32, 32], 3, 5, GeneratorNorm::SelfModulated, true, false),
        ([3, 64, 64], 4, 4, GeneratorNorm::None, false, true),
        ([3, 128, 128], 5, 5, GeneratorNorm::Batch, true, true),
        ([1, 24, 40], 3, 3, GeneratorNorm::Batch, false, false),
    ];
    for (shape, levels, kernel, norm, spectral, encoder) in cases {
        let vs = VarStore::new(Device::Cpu);
        let c = ConvGanConfig {
            generator_norm: norm,
            spectral_norm: spectral,
            encoder,
            ..config(shape, levels, kernel)
        };
        let gan = Gan::conv(&vs.root(), &c).unwrap();
        let z = gan.latents(3, Kind::Float, Device::Cpu);
        let x = gan.generator.forward_t(&z, true);
        assert_eq!(x.size(), [3, shape[0], shape[1], shape[2]], "{c:?}");
        assert!(x.abs().max().double_value(&[]) <= 1.0, "tanh output");
        let d = gan.discriminator.forward_t(&x, true);
        assert_eq!(d.size(), [3, if encoder { 6 } else { 1 }], "{c:?}");
        // every parameter lives under one of the two nets
        for (name, _) in vs.variables() {
            assert!(
                name.starts_with("generator.") || name.starts_with("discriminator."),
                "{name}"
            );
        }
        // evaluation mode too (batch norm's running statistics)
        assert_eq!(gan.generate(&z).size(), x.size());
    }
}

#[test]
fn sizes_the_strides_cannot_halve_are_refused() {
    for (shape, levels) in [([1, 28, 28], 3), ([3, 30, 32], 2), ([3, 8, 8], 4)] {
        let err = config(shape, levels, 4).validate().unwrap_err().to_string();
        assert!(
            err.contains("model.image_shape") && err.contains("multiple of"),
            "{err}"
        );
    }
    let err = config([2, 8, 8], 1, 4).validate().unwrap_err().to_string();
    assert!(err.contains("1 (grey) or 3 (RGB)"), "{err}");
}

/// `W / sigma` with persistent power iteration converges to spectral norm 1 for dense and
/// strided conv weights (the matrix `[out, in k k]`), in training mode, and evaluation mode uses
/// the stored vectors.
#[test]
fn unit_spectral_layers_have_norm_one() {
    tch::manual_seed(3);
    for geometry in [
        Geometry::Dense,
        Geometry::Strided {
            kernel: 4,
            stride: 2,
            padding: 1,
        },
    ] {
        let vs = VarStore::new(Device::Cpu);
        let layer = SpectralLinear::unit(&vs.root(), 5, 7, geometry, 1).unwrap();
        let _ = tch::no_grad(|| layer.weight.shallow_clone().normal_(0.0, 3.0));
        for _ in 0..200 {
            let _ = layer.normalized_weight(true);
        }
        let w = tch::no_grad(|| layer.normalized_weight(false)).to_kind(Kind::Double);
        let m = w.reshape([7, -1]);
        let (_, s, _) = m.svd(true, false);
        let top = s.double_value(&[0]);
        assert!((top - 1.0).abs() < 1e-4, "{geometry:?}: sigma {top}");
        let input = match geometry {
            Geometry::Dense => Tensor::randn([2, 5], tch::kind::FLOAT_CPU),
            _ => Tensor::randn([2, 5, 8, 8], tch::kind::FLOAT_CPU),
        };
        let y = layer.forward(&input, false);
        assert_eq!(y.size()[1], 7);
    }
    let vs = VarStore::new(Device::Cpu);
    let conv = Geometry::Conv {
        kernel: 3,
        in_hw: (4, 4),
    };
    assert!(SpectralLinear::unit(&vs.root(), 2, 2, conv, 1).is_err());
}
