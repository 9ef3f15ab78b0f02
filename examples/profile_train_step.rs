//! Times the parts of one training step (encoders forward, scoring, backward, Adam) on
//! random data: `cargo run --release --example profile_train_step -- [batch] [config]`.
use std::time::Instant;

use acf_index::model::{AcfModel, Config, Vocab, loss, scoring};
use acf_index::train::adam::Adam;
use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let b: i64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let cfg = match Config::preset_or_file(args.get(2).map_or("pvig-nano", String::as_str)) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let words: Vec<String> = (0..3000).map(|i| format!("w{i}")).collect();
    let model = AcfModel::new(cfg.clone(), Vocab::build(words.iter().map(String::as_str), 1), Device::Cpu);
    let mut adam = Adam::new(model.var_store(), &cfg.training);
    let pixels = Tensor::randint(256, [b, 3, 224, 224], (Kind::Uint8, Device::Cpu));
    let ids = Tensor::randint_low(2, 3000, [b, 18], (Kind::Int64, Device::Cpu));
    let lengths = Tensor::full([b], 18, (Kind::Int64, Device::Cpu));
    let image_ids = Tensor::arange(b, (Kind::Int64, Device::Cpu));
    for it in 0..3 {
        let t = Instant::now();
        let img = model.encode_pixels(&pixels, true);
        let t_img = t.elapsed().as_secs_f64();
        let txt = model.encode_ids(&ids, &lengths, true);
        let t_txt = t.elapsed().as_secs_f64();
        let s = scoring::score_matrix(&img, &txt, &cfg.scoring);
        let g = scoring::global_similarity(&img, &txt);
        let l = loss::acf_loss(&s, &g, &image_ids, None, &cfg.loss);
        let t_score = t.elapsed().as_secs_f64();
        adam.zero_grad();
        l.backward();
        let t_back = t.elapsed().as_secs_f64();
        adam.step(1e-4);
        let t_all = t.elapsed().as_secs_f64();
        println!(
            "iter {it}: image fwd {:.2}s, text fwd {:.2}s, score+loss {:.2}s, backward {:.2}s, adam {:.2}s → {:.1} img/s",
            t_img,
            t_txt - t_img,
            t_score - t_txt,
            t_back - t_score,
            t_all - t_back,
            b as f64 / t_all
        );
    }
}
