//! Adam (Kingma & Ba, 2015) over a VarStore's trainable tensors, with its state held in
//! named tensors so that checkpoints can save and restore it exactly (tch's built-in
//! optimisers do not expose their state).

use std::collections::BTreeMap;

use tch::{Kind, Tensor, nn};

use crate::model::config::TrainingConfig;

/// Adam's moment estimates and step count.
pub struct Adam {
    params: BTreeMap<String, Tensor>,
    /// First moments, by parameter name.
    pub m: BTreeMap<String, Tensor>,
    /// Second moments, by parameter name.
    pub v: BTreeMap<String, Tensor>,
    /// Steps taken so far.
    pub step: i64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    clip: f64,
    /// Decoupled weight decay (`training.weight_decay`).
    weight_decay: f64,
}

impl Adam {
    /// Adam over every trainable variable of `vs`, betas/ε/clip from the config.
    pub fn new(vs: &nn::VarStore, cfg: &TrainingConfig) -> Adam {
        let params: BTreeMap<String, Tensor> =
            vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        let zeros = |t: &Tensor| t.zeros_like();
        let m = params.iter().map(|(k, t)| (k.clone(), zeros(t))).collect();
        let v = params.iter().map(|(k, t)| (k.clone(), zeros(t))).collect();
        Adam {
            params,
            m,
            v,
            step: 0,
            beta1: cfg.adam_betas[0],
            beta2: cfg.adam_betas[1],
            eps: cfg.adam_eps,
            clip: cfg.grad_clip,
            weight_decay: cfg.weight_decay,
        }
    }

    /// Sets all gradients to zero.
    pub fn zero_grad(&mut self) {
        for p in self.params.values_mut() {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr`; returns the gradient norm before clipping.
    pub fn step(&mut self, lr: f64) -> f64 {
        let _guard = tch::no_grad_guard();
        let grads: Vec<(&String, Tensor)> = self
            .params
            .iter()
            .map(|(k, p)| {
                let g = p.grad();
                (k, if g.defined() { g } else { p.zeros_like() })
            })
            .collect();
        // One device→host transfer for the norm, not one per parameter.
        let squares: Vec<Tensor> = grads.iter().map(|(_, g)| g.square().sum(Kind::Double)).collect();
        let norm = if squares.is_empty() {
            0.0
        } else {
            Tensor::stack(&squares, 0).sum(Kind::Double).sqrt().double_value(&[])
        };
        let scale = if self.clip > 0.0 && norm > self.clip { self.clip / (norm + 1e-6) } else { 1.0 };
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        for (name, g) in grads {
            let g = g * scale;
            let (Some(m), Some(v), Some(p)) =
                (self.m.get_mut(name), self.v.get_mut(name), self.params.get(name))
            else {
                continue;
            };
            *m = &*m * self.beta1 + &g * (1.0 - self.beta1);
            *v = &*v * self.beta2 + g.square() * (1.0 - self.beta2);
            let update = (&*m / bc1) / ((&*v / bc2).sqrt() + self.eps) * lr;
            let mut p = p.shallow_clone();
            if self.weight_decay > 0.0 && p.dim() >= 2 {
                // AdamW: the decay acts on the weight itself, not through the moments.
                let _ = p.f_mul_scalar_(1.0 - lr * self.weight_decay);
            }
            let _ = p.f_sub_(&update);
        }
        norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Config;
    use tch::Device;

    #[test]
    fn minimises_a_quadratic_and_matches_the_textbook_first_step() {
        let vs = nn::VarStore::new(Device::Cpu);
        let x = vs.root().var_copy("x", &Tensor::from_slice(&[3.0f32, -2.0]));
        let mut cfg = Config::pvig_nano().training;
        cfg.grad_clip = 0.0;
        let mut adam = Adam::new(&vs, &cfg);
        adam.zero_grad();
        x.square().sum(Kind::Float).backward();
        adam.step(0.1);
        // First Adam step moves each coordinate by lr·sign(g) (up to ε).
        let after = Vec::<f32>::try_from(&x.detach()).unwrap();
        assert!((after[0] - 2.9).abs() < 1e-5 && (after[1] + 1.9).abs() < 1e-5, "{after:?}");
        for _ in 0..300 {
            adam.zero_grad();
            x.square().sum(Kind::Float).backward();
            adam.step(0.05);
        }
        assert!(x.abs().max().double_value(&[]) < 0.05);
    }

    #[test]
    fn weight_decay_shrinks_matrices_and_leaves_biases_alone() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[2.0f32, -4.0]).view([1, 2]));
        let b = vs.root().var_copy("b", &Tensor::from_slice(&[3.0f32]));
        let mut cfg = Config::pvig_nano().training;
        cfg.weight_decay = 0.5;
        let mut adam = Adam::new(&vs, &cfg);
        adam.zero_grad();
        // A zero gradient: Adam's own update is 0, only the decay moves anything.
        (w.sum(Kind::Float) * 0.0 + b.sum(Kind::Float) * 0.0).backward();
        adam.step(0.1);
        let w_after = Vec::<f32>::try_from(&w.detach().view([-1])).unwrap();
        let b_after = Vec::<f32>::try_from(&b.detach()).unwrap();
        // Each weight × (1 − 0.1·0.5) = 0.95; the bias is untouched.
        assert!((w_after[0] - 1.9).abs() < 1e-6 && (w_after[1] + 3.8).abs() < 1e-6, "{w_after:?}");
        assert_eq!(b_after, vec![3.0]);
    }

    #[test]
    fn one_step_on_a_small_batch_changes_every_trainable_parameter() {
        use crate::model::{AcfModel, Encoded, Vocab, loss, scoring};
        tch::manual_seed(3);
        let cfg = Config::pvig_nano();
        let vocab = Vocab::build(["a plane at the airport", "boats in a harbor", "a green tennis court"], 1);
        let model = AcfModel::new(cfg.clone(), vocab, Device::Cpu);
        let before: Vec<(String, Tensor)> = model
            .var_store()
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(k, t)| (k, t.detach().copy()))
            .collect();
        let mut adam = Adam::new(model.var_store(), &cfg.training);
        let pixels = Tensor::randint(256, [3, 3, 224, 224], (Kind::Uint8, Device::Cpu));
        let caps = ["a plane at the airport", "boats in a harbor", "a green tennis court"];
        let enc: Vec<Encoded> = caps.iter().map(|c| model.vocab.encode(c, 32)).collect();
        let (ids, lengths) = crate::model::text_encoder::batch(&enc);
        let img = model.encode_pixels(&pixels, true);
        let txt = model.encode_ids(&ids, &lengths, true);
        let s = scoring::score_matrix(&img, &txt, &cfg.scoring);
        let g = scoring::global_similarity(&img, &txt);
        let mut loss_cfg = cfg.loss.clone();
        loss_cfg.negatives = crate::model::config::Negatives::Sum;
        loss_cfg.margin = 10.0; // every hinge active, so every branch gets a gradient
        let not_negative = loss::excluded_pairs(&Tensor::from_slice(&[0i64, 1, 2]), None, None);
        let l = loss::acf_loss(&s, &g, &not_negative, None, &loss_cfg);
        adam.zero_grad();
        l.backward();
        adam.step(1e-3);
        let after = model.var_store().variables();
        let unchanged: Vec<&String> =
            before.iter().filter(|(k, t)| after[k.as_str()].equal(t)).map(|(k, _)| k).collect();
        assert!(unchanged.is_empty(), "parameters without an update: {unchanged:?}");
        assert!(before.len() > 50);
    }
}
