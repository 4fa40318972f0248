//! Where a model workload's time goes, node by node (`Graph::set_profiling`): the SimCLR
//! step or the embedding of ResNet-mini at 32 pixels or of resnet_mini96 at 96, the batches
//! of `selfsup bench`'s workloads. Run with
//! `cargo run --release --example profile_model -- [step|embed] [32|96] [REPS]`
//! (threads: `RAYON_NUM_THREADS`).

use selfsup::graph::{Graph, GraphBuilder, Mode};
use selfsup::nn::{resnet_encoder, simclr, ResNetConfig};
use std::time::Instant;

/// Prints the wall time per repetition and the nodes by their share of the profiled time.
fn report(g: &Graph, wall: f64, reps: usize, images: usize) {
    let mut nodes = g.profile();
    let total: f64 = nodes.iter().map(|(_, f, b)| f + b).sum();
    nodes.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
    let ms = |s: f64| s * 1e3 / reps as f64;
    println!(
        "{:.1} ms per repetition ({:.0} images/s), {:.1} ms of it in the nodes",
        ms(wall),
        (reps * images) as f64 / wall,
        ms(total)
    );
    println!(
        "{:28} {:>10} {:>10} {:>6}",
        "node", "fwd ms", "bwd ms", "share"
    );
    for (name, f, b) in nodes.iter().filter(|(_, f, b)| f + b > 0.0) {
        let share = 100.0 * (f + b) / total;
        println!("{name:28} {:10.2} {:10.2} {share:5.1}%", ms(*f), ms(*b));
    }
}

fn main() -> selfsup::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map_or("step", String::as_str);
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    if !matches!(what, "step" | "embed") || !matches!(size, 32 | 96) || reps == 0 {
        eprintln!("usage: profile_model [step|embed] [32|96] [REPS >= 1]");
        std::process::exit(2);
    }
    let cfg = ResNetConfig {
        image_size: size,
        ..ResNetConfig::default()
    };
    // The batches of the bench workloads: half as many images at 96 pixels.
    let scale = if size == 96 { 2 } else { 1 };
    let pixel = |i: usize| ((i * 7919) % 1000) as f32 / 1000.0;
    if what == "embed" {
        let images = 512 / scale;
        let mut b = GraphBuilder::new();
        let enc = resnet_encoder(&mut b, &cfg, images)?;
        let mut g = b.build(1)?;
        for (i, v) in g.input_mut(enc.input)?.iter_mut().enumerate() {
            *v = pixel(i);
        }
        g.forward_to(enc.h, Mode::Eval)?; // warm-up
        g.set_profiling(true);
        let t = Instant::now();
        for _ in 0..reps {
            g.forward_to(enc.h, Mode::Eval)?;
        }
        report(&g, t.elapsed().as_secs_f64(), reps, images);
    } else {
        let images = 256 / scale;
        let mut m = simclr(&cfg, images, 0.5, 1)?;
        for (i, v) in m.graph.input_mut(m.input)?.iter_mut().enumerate() {
            *v = pixel(i);
        }
        m.graph.forward(Mode::Train)?; // warm-up
        m.graph.backward()?;
        m.graph.set_profiling(true);
        let t = Instant::now();
        for _ in 0..reps {
            m.graph.forward(Mode::Train)?;
            m.graph.backward()?;
        }
        report(&m.graph, t.elapsed().as_secs_f64(), reps, images);
    }
    Ok(())
}
