//! The optimisers (Adam, AdamW, SGD with momentum), written over one flat buffer.
//!
//! At construction every trainable parameter is moved into one contiguous tensor and each
//! parameter becomes a view of its slice. The gradients of a step are taken with
//! `torch::autograd::grad` (nothing accumulates in `.grad`, so there is nothing to zero) and
//! concatenated; the update is then a handful of element-wise kernels over the whole buffer,
//! where an optimiser looping over parameters launches several kernels for each of them
//! (MobileNetV2 has 158) — the per-step overhead that matters on a GPU at small batches.
//!
//! The moments live in two more flat tensors, so they are saved with the checkpoint and a
//! resumed run continues with them (`optimizer.pt`). The updates follow PyTorch's
//! `torch.optim` definitions (Adam with L2 decay added to the gradient, AdamW with decoupled
//! decay, SGD with momentum and no dampening); tests compare them with libtorch's own.

use std::path::Path;

use anyhow::{bail, Context};
use tch::{Kind, Tensor};

use super::OptimizerKind;

/// Adam's defaults, as PyTorch's.
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

pub struct FlatOptimizer {
    kind: OptimizerKind,
    /// The trainable parameters, each a view into `flat`.
    params: Vec<Tensor>,
    flat: Tensor,
    /// Adam / AdamW: the first and second moments. SGD: the momentum buffer in `first`.
    first: Tensor,
    second: Tensor,
    steps: i64,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
    /// Parameters that got no gradient in the last [`FlatOptimizer::gradients`].
    no_grad: Vec<usize>,
    /// Per-element multipliers of the learning rate (parameter groups), if any differ from 1.
    lr_scale: Option<Tensor>,
    /// Largest global gradient norm a step takes; larger gradients are scaled down to it.
    max_grad_norm: Option<f64>,
}

impl FlatOptimizer {
    /// Takes over `params` (the trainable variables): from here on their storage is the
    /// optimiser's flat buffer.
    pub fn new(kind: OptimizerKind, params: Vec<Tensor>, lr: f64, weight_decay: f64, momentum: f64) -> FlatOptimizer {
        let _guard = tch::no_grad_guard();
        let device = params.first().map_or(tch::Device::Cpu, Tensor::device);
        let flat = if params.is_empty() {
            Tensor::zeros([0], (Kind::Float, device))
        } else {
            Tensor::cat(&params.iter().map(|p| p.detach().reshape([-1])).collect::<Vec<_>>(), 0)
        };
        let mut params = params;
        let mut offset = 0;
        for p in &mut params {
            let n = p.numel() as i64;
            p.set_data(&flat.narrow(0, offset, n).view(p.size().as_slice()));
            offset += n;
        }
        let zeros = || flat.zeros_like();
        FlatOptimizer {
            kind,
            params,
            first: zeros(),
            second: zeros(),
            flat,
            steps: 0,
            lr,
            weight_decay,
            momentum,
            no_grad: Vec::new(),
            lr_scale: None,
            max_grad_norm: None,
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Multiplies each parameter's learning rate (and so its AdamW decay) by its entry of
    /// `scales` (one per parameter, in the order given to [`new`](Self::new)); 0 holds a
    /// parameter still, as a frozen one.
    pub fn set_lr_scales(&mut self, scales: &[f64]) {
        assert_eq!(scales.len(), self.params.len(), "one learning-rate scale per parameter");
        if scales.iter().all(|&s| s == 1.0) {
            self.lr_scale = None;
            return;
        }
        let parts: Vec<Tensor> =
            self.params.iter().zip(scales).map(|(p, &s)| p.detach().reshape([-1]).full_like(s)).collect();
        self.lr_scale = Some(Tensor::cat(&parts, 0));
    }

    /// Clips each step's gradient to a global L2 norm of at most `max` (as
    /// `torch.nn.utils.clip_grad_norm_`), or not at all with `None`.
    pub fn set_max_grad_norm(&mut self, max: Option<f64>) {
        self.max_grad_norm = max;
    }

    /// Steps taken (restored by [`FlatOptimizer::load`]).
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// The gradient of `loss` with respect to every parameter, as one flat tensor. A
    /// parameter the loss does not depend on gets zeros, and the next [`step`](Self::step)
    /// leaves it as it is (libtorch's optimisers skip a parameter with no gradient).
    pub fn gradients(&mut self, loss: &Tensor) -> Tensor {
        if self.params.is_empty() {
            return self.flat.zeros_like();
        }
        let grads = Tensor::run_backward(&[loss], &self.params, false, false);
        self.no_grad = grads.iter().enumerate().filter(|(_, g)| !g.defined()).map(|(i, _)| i).collect();
        let flat: Vec<Tensor> = grads
            .iter()
            .zip(&self.params)
            .map(|(g, p)| if g.defined() { g.reshape([-1]) } else { p.zeros_like().reshape([-1]) })
            .collect();
        Tensor::cat(&flat, 0)
    }

    /// Backward pass and update.
    pub fn backward_step(&mut self, loss: &Tensor) {
        let grad = self.gradients(loss);
        self.step(&grad);
    }

    /// One update with the flat gradient `grad`.
    pub fn step(&mut self, grad: &Tensor) {
        let _guard = tch::no_grad_guard();
        let clipped;
        let grad = match self.max_grad_norm {
            Some(max) => {
                // As torch's clip_grad_norm_: scaled by max / (norm + 1e-6) when that is < 1.
                let coef = (grad.norm() + 1e-6).reciprocal() * max;
                clipped = grad * coef.clamp_max(1.0);
                &clipped
            }
            None => grad,
        };
        // Parameters without a gradient keep their values (weight decay included).
        let keep: Vec<(usize, Tensor)> = self.no_grad.iter().map(|&i| (i, self.params[i].copy())).collect();
        self.update(grad);
        for (i, value) in keep {
            self.params[i].copy_(&value);
        }
    }

    fn update(&mut self, grad: &Tensor) {
        self.steps += 1;
        let (lr, wd) = (self.lr, self.weight_decay);
        match self.kind {
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let g = if self.kind == OptimizerKind::Adam && wd != 0.0 {
                    grad + &self.flat * wd
                } else {
                    grad.shallow_clone()
                };
                if self.kind == OptimizerKind::Adamw && wd != 0.0 {
                    match &self.lr_scale {
                        None => {
                            let _ = self.flat.g_mul_scalar_(1.0 - lr * wd);
                        }
                        Some(scale) => {
                            let _ = self.flat.g_mul_(&(scale * (-lr * wd)).g_add_scalar_(1.0));
                        }
                    }
                }
                let _ = self.first.lerp_(&g, 1.0 - BETA1);
                let _ = self.second.lerp_(&g.square(), 1.0 - BETA2);
                let t = self.steps as f64;
                let (bc1, bc2) = (1.0 - BETA1.powf(t), 1.0 - BETA2.powf(t));
                let denom = (self.second.sqrt() / bc2.sqrt()).g_add_scalar_(EPS);
                let mut update = &self.first * (-lr / bc1);
                if let Some(scale) = &self.lr_scale {
                    update *= scale;
                }
                let _ = self.flat.addcdiv_(&update, &denom);
            }
            OptimizerKind::Sgd => {
                let g = if wd != 0.0 { grad + &self.flat * wd } else { grad.shallow_clone() };
                let direction = if self.momentum == 0.0 {
                    g
                } else {
                    if self.steps == 1 {
                        self.first.copy_(&g);
                    } else {
                        let _ = self.first.g_mul_scalar_(self.momentum);
                        let _ = self.first.g_add_(&g);
                    }
                    self.first.shallow_clone()
                };
                let mut update = direction * lr;
                if let Some(scale) = &self.lr_scale {
                    update *= scale;
                }
                let _ = self.flat.g_sub_(&update);
            }
        }
    }

    /// Writes the moments and the step count.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let steps = Tensor::from_slice(&[self.steps]);
        let kind = Tensor::from_slice(&[self.kind as i64]);
        Tensor::save_multi(
            &[("first", &self.first), ("second", &self.second), ("steps", &steps), ("kind", &kind)],
            path,
        )
        .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Restores what [`FlatOptimizer::save`] wrote, if it is for this optimiser and these
    /// parameters.
    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        // libtorch reads the file itself: what is not a regular file of a sane size is refused
        // first (the state is two values per parameter, far below this).
        crate::files::open_capped(path, 8 << 30).with_context(|| format!("cannot read {}", path.display()))?;
        let saved = Tensor::load_multi_with_device(path, self.flat.device())
            .with_context(|| format!("cannot read {}", path.display()))?;
        let get = |name: &str| {
            saved
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
                .with_context(|| format!("{} has no \"{name}\"", path.display()))
        };
        let (first, second) = (get("first")?, get("second")?);
        let kind = get("kind")?.int64_value(&[0]);
        if kind != self.kind as i64 {
            bail!("{} holds the state of another optimiser", path.display());
        }
        if first.size() != self.flat.size() || second.size() != self.flat.size() {
            bail!("{} is for {:?} parameters, this model has {:?}", path.display(), first.size(), self.flat.size());
        }
        let steps = get("steps")?.int64_value(&[0]);
        let _guard = tch::no_grad_guard();
        self.first.copy_(&first);
        self.second.copy_(&second);
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, OptimizerConfig};
    use tch::Device;

    /// Two copies of the same small network: one trained by libtorch's optimiser, one by ours.
    fn twin() -> (nn::VarStore, nn::VarStore, Tensor, Tensor) {
        tch::manual_seed(3);
        let w = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([4], (Kind::Float, Device::Cpu));
        let make = || {
            let vs = nn::VarStore::new(Device::Cpu);
            let _ = vs.root().var_copy("w", &w);
            let _ = vs.root().var_copy("b", &b);
            vs
        };
        let x = Tensor::randn([8, 5], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
        (make(), make(), x, y)
    }

    fn loss(vs: &nn::VarStore, x: &Tensor, y: &Tensor) -> Tensor {
        let v = vs.variables();
        ((x.matmul(&v["w"]) + &v["b"]).tanh() - y).square().sum(Kind::Float)
    }

    fn variables(vs: &nn::VarStore) -> Vec<Tensor> {
        let v = vs.variables();
        vec![v["w"].shallow_clone(), v["b"].shallow_clone()]
    }

    #[test]
    fn updates_match_libtorch_optimisers() {
        let (lr, wd, momentum) = (0.05, 0.01, 0.9);
        type Reference = Box<dyn Fn(&nn::VarStore) -> nn::Optimizer>;
        let cases: [(OptimizerKind, Reference); 3] = [
            (OptimizerKind::Adam, Box::new(move |vs| nn::Adam { wd, ..Default::default() }.build(vs, lr).unwrap())),
            (OptimizerKind::Adamw, Box::new(move |vs| nn::AdamW { wd, ..Default::default() }.build(vs, lr).unwrap())),
            (
                OptimizerKind::Sgd,
                Box::new(move |vs| nn::Sgd { momentum, wd, ..Default::default() }.build(vs, lr).unwrap()),
            ),
        ];
        for (kind, reference) in cases {
            let (theirs, ours, x, y) = twin();
            let mut reference = reference(&theirs);
            let mut flat = FlatOptimizer::new(kind, variables(&ours), lr, wd, momentum);
            for _ in 0..20 {
                reference.backward_step(&loss(&theirs, &x, &y));
                flat.backward_step(&loss(&ours, &x, &y));
            }
            for (a, b) in variables(&theirs).iter().zip(variables(&ours)) {
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "{kind:?}: parameters differ by {diff}");
            }
            let moved = (&variables(&theirs)[0] - &variables(&twin().0)[0]).abs().max().double_value(&[]);
            assert!(moved > 1e-2, "{kind:?}: the parameters did not move");
        }
    }

    #[test]
    fn a_parameter_without_gradient_is_left_alone() {
        let (vs, _, x, y) = twin();
        let unused = vs.root().var_copy("unused", &Tensor::ones([3], (Kind::Float, Device::Cpu)));
        let mut params = variables(&vs);
        params.push(unused.shallow_clone());
        let mut opt = FlatOptimizer::new(OptimizerKind::Adamw, params, 0.05, 0.1, 0.0);
        for _ in 0..5 {
            opt.backward_step(&loss(&vs, &x, &y));
        }
        assert_eq!(Vec::<f32>::try_from(&unused).unwrap(), [1.0, 1.0, 1.0], "decayed without a gradient");
    }

    #[test]
    fn learning_rate_scales_make_parameter_groups() {
        // b at scale 0 stays as it is (AdamW's decay included), and w moves exactly as it
        // does when it is the only parameter; at 0.5, SGD moves b half as far.
        let (plain, grouped, x, y) = twin();
        let only_w = vec![variables(&plain)[0].shallow_clone()];
        let mut reference = FlatOptimizer::new(OptimizerKind::Adamw, only_w, 0.05, 0.1, 0.0);
        let mut opt = FlatOptimizer::new(OptimizerKind::Adamw, variables(&grouped), 0.05, 0.1, 0.0);
        opt.set_lr_scales(&[1.0, 0.0]);
        let b0 = variables(&grouped)[1].copy();
        for _ in 0..5 {
            reference.backward_step(&loss(&plain, &x, &y));
            opt.backward_step(&loss(&grouped, &x, &y));
        }
        let d = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        assert!(d(&variables(&plain)[0], &variables(&grouped)[0]) < 1e-6, "the full-rate group differs");
        assert_eq!(d(&variables(&grouped)[1], &b0), 0.0, "a parameter at rate 0 moved");

        let (full, half, x, y) = twin();
        let start = variables(&full)[1].copy();
        let mut a = FlatOptimizer::new(OptimizerKind::Sgd, variables(&full), 0.05, 0.0, 0.0);
        let mut b = FlatOptimizer::new(OptimizerKind::Sgd, variables(&half), 0.05, 0.0, 0.0);
        b.set_lr_scales(&[1.0, 0.5]);
        a.backward_step(&loss(&full, &x, &y));
        b.backward_step(&loss(&half, &x, &y));
        let (moved_full, moved_half) = (&variables(&full)[1] - &start, &variables(&half)[1] - &start);
        assert!(moved_full.abs().max().double_value(&[]) > 1e-3);
        assert!(d(&(moved_full * 0.5), &moved_half) < 1e-7, "half the rate is not half the step");
    }

    #[test]
    fn gradients_are_clipped_to_the_largest_norm() {
        let (vs, _, x, y) = twin();
        let before: Vec<Tensor> = variables(&vs).iter().map(Tensor::copy).collect();
        let mut opt = FlatOptimizer::new(OptimizerKind::Sgd, variables(&vs), 1.0, 0.0, 0.0);
        opt.set_max_grad_norm(Some(0.01));
        let grad = opt.gradients(&loss(&vs, &x, &y));
        let norm = grad.norm().double_value(&[]);
        assert!(norm > 0.1, "the test needs a gradient above the limit, got {norm}");
        opt.step(&grad);
        // SGD at rate 1: the step is the clipped gradient, whose norm is the limit.
        let step: Vec<Tensor> = variables(&vs).iter().zip(&before).map(|(p, b)| (b - p).reshape([-1])).collect();
        let step = Tensor::cat(&step, 0);
        assert!((step.norm().double_value(&[]) - 0.01).abs() < 1e-6, "{}", step.norm().double_value(&[]));
        assert!(
            (&step - &grad * (0.01 / (norm + 1e-6))).abs().max().double_value(&[]) < 1e-7,
            "not along the gradient"
        );
    }

    #[test]
    fn saved_state_continues_the_same_run() {
        let dir = std::env::temp_dir().join(format!("vigil-optim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (whole, split, x, y) = twin();
        let mut a = FlatOptimizer::new(OptimizerKind::Adamw, variables(&whole), 0.05, 0.01, 0.0);
        for _ in 0..10 {
            a.backward_step(&loss(&whole, &x, &y));
        }
        // Five steps, saved, and five more by a fresh optimiser that loads the state.
        let mut b = FlatOptimizer::new(OptimizerKind::Adamw, variables(&split), 0.05, 0.01, 0.0);
        for _ in 0..5 {
            b.backward_step(&loss(&split, &x, &y));
        }
        b.save(&dir.join("optimizer.pt")).unwrap();
        let mut c = FlatOptimizer::new(OptimizerKind::Adamw, variables(&split), 0.05, 0.01, 0.0);
        c.load(&dir.join("optimizer.pt")).unwrap();
        assert_eq!(c.steps(), 5);
        for _ in 0..5 {
            c.backward_step(&loss(&split, &x, &y));
        }
        for (p, q) in variables(&whole).iter().zip(variables(&split)) {
            assert_eq!((p - q).abs().max().double_value(&[]), 0.0, "a resumed run differs from an unbroken one");
        }
        let mut sgd = FlatOptimizer::new(OptimizerKind::Sgd, variables(&split), 0.05, 0.0, 0.9);
        let err = sgd.load(&dir.join("optimizer.pt")).unwrap_err().to_string();
        assert!(err.contains("another optimiser"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
